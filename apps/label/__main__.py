"""``python -m apps.label start_server --app apps/label --studies DIR [--port 8000] [--conf models DIR]``: MONAI
Label's own command line with the pydicom 3 import alias (see :mod:`apps.label.server`). Run from the repository
root. Research use only."""

from apps.label.server import install_pydicom_alias, main

install_pydicom_alias()  # also in a worker process that re-imports this module (uvicorn --workers)

if __name__ == "__main__":
    main()
