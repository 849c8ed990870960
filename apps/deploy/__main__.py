"""``python -m apps.deploy -i <dicom folder> -o <output folder> -m <models folder>`` (the SDK's runner arguments)."""

from apps.deploy.app import main

if __name__ == "__main__":
    main()
