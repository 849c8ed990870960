"""Federated training of the bundle on NVIDIA FLARE: FedAvg over sites that each run the bundle's own training
workflow on their own data; only weights (and validation figures) leave a site. Research use only.

- :mod:`apps.federated.site_training`: the site's script (NVFlare Client API around ``configs/train.json``);
- :mod:`apps.federated.controller`: the server's FedAvg, weighted by training cases, keeping the global model with
  the best weighted validation MAE as a ``model.pt`` the inference workflow reads;
- :mod:`apps.federated.settings`: what a consortium chooses (rounds, local epochs, minimum sites, privacy), each
  default once;
- :mod:`apps.federated.job`: the job (sites, rounds, local epochs, minimum sites, privacy filters) and its runs in
  NVFlare's simulator (``python -m apps.federated simulate``) or as an exported job folder for a real deployment.
"""
