"""Probabilistic matching: attributes in match form -> blocking keys -> candidate pairs -> comparison levels -> Fellegi-Sunter model -> scores and decisions."""
