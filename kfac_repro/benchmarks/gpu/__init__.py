"""`kfac-repro bench gpu`: the paper profile's costs on one device (`profile`) and their CSV tables (`table`)."""
