"""The data steward's YAML trust policy: the rules (model), loading them with line numbers
(loading), and the policy in force, reloaded when its files change (reloading).
"""

from app.policy.loading import MAX_POLICY_BYTES, SafeLoader, load_policy, policy_files
from app.policy.model import (
    BUILTIN_SOURCES,
    SELF_ASSERTED,
    SELF_ISSUED,
    Dataset,
    ExternalIdRule,
    OrganizationRule,
    Policy,
    Problem,
    QualificationRule,
    Requirement,
    TrustedSource,
    _url_parts,
    compile_title_pattern,
    has_nested_quantifier,
    normalize_org_id,
    normalize_title,
)
from app.policy.reloading import PolicyFile
from app.request_path import normalize_path

__all__ = [
    "BUILTIN_SOURCES",
    "MAX_POLICY_BYTES",
    "SELF_ASSERTED",
    "SELF_ISSUED",
    "Dataset",
    "ExternalIdRule",
    "OrganizationRule",
    "Policy",
    "PolicyFile",
    "Problem",
    "QualificationRule",
    "Requirement",
    "SafeLoader",
    "TrustedSource",
    "_url_parts",
    "compile_title_pattern",
    "has_nested_quantifier",
    "load_policy",
    "normalize_org_id",
    "normalize_path",
    "normalize_title",
    "policy_files",
]
