"""MONAI Label app: two clicks on the nigrosome-1 centroids (or none: the localiser) give both SBRs with intervals.
Research use only. Needs the ``label`` extra (see docs/integrations/label.md)."""
