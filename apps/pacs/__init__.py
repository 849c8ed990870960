"""PACS loop: Orthanc with the project's configuration and a study router that sends each stable SMWI study through
the MONAI Deploy app and stores its DICOM SR and Encapsulated PDF back into the same study. Research use only."""
