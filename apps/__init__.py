"""Applications that run the bundle where users work: ``deploy`` (MONAI Deploy App SDK) and ``label`` (MONAI Label)."""
