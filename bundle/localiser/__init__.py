"""The nigrosome-1 localiser, side by side: its network, decoding and plausibility (``model``), the coordinate and
heat-map transforms and its preprocessing (``centroids``), and the pipeline that runs it before the regressor and
writes ``centroids.csv`` (``pipeline``)."""
