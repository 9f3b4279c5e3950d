"""Pure plotting functions (tables in, matplotlib figures or RGB arrays out), used by reports
and notebooks."""
