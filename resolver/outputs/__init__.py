"""What a run writes: the output tables, the evaluation against a truth, the HTML report."""
