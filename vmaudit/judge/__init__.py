"""Facts judged: the rules against baselines, version ordering, the risk score, the verdict."""
