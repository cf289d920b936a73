"""Facts judged: the rules against baselines, version ordering, the risk score, the verdict.

Importing the package registers every rule module's rules in ``vmaudit.judge.rules.RULES``
(the rule modules import ``rules``, never the other way round).
"""

from vmaudit.judge import (
    config_rules,  # noqa: F401  (the Linux config rules)
    windows_rules,  # noqa: F401  (the win.* rules)
)
