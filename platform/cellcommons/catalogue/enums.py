"""Closed vocabularies of the catalogue (DOMAIN.md); each becomes a PostgreSQL enum."""

from enum import StrEnum


class Sector(StrEnum):
    public = "public"
    non_profit = "non_profit"
    commercial = "commercial"


class TransferBasis(StrEnum):
    eea = "eea"
    adequacy = "adequacy"
    scc = "scc"
    none = "none"


class DonorRelation(StrEnum):
    autologous = "autologous"
    allogeneic_related = "allogeneic_related"
    allogeneic_unrelated = "allogeneic_unrelated"


class Sex(StrEnum):
    female = "female"
    male = "male"
    unknown = "unknown"


class Eligibility(StrEnum):
    eligible = "eligible"
    ineligible = "ineligible"
    pending = "pending"


class DonorMarker(StrEnum):
    anti_hiv_1_2 = "anti_hiv_1_2"
    hbsag = "hbsag"
    anti_hbc = "anti_hbc"
    anti_hcv = "anti_hcv"
    syphilis = "syphilis"
    htlv_i = "htlv_i"


class DonorTestResult(StrEnum):
    negative = "negative"
    positive = "positive"
    pending = "pending"


class CultureSupplement(StrEnum):
    fbs = "fbs"
    hpl = "hpl"
    serum_free = "serum_free"


class ReleaseStatus(StrEnum):
    quarantine = "quarantine"
    released = "released"
    conditionally_released = "conditionally_released"
    rejected = "rejected"


class Route(StrEnum):
    intravenous = "intravenous"
    intrathecal = "intrathecal"
    local = "local"


class TestType(StrEnum):
    __test__ = False  # not a pytest class

    viability = "viability"
    identity_marker = "identity_marker"
    cell_count = "cell_count"
    sterility = "sterility"
    mycoplasma = "mycoplasma"
    endotoxin = "endotoxin"
    adventitious_agent = "adventitious_agent"
    karyotype = "karyotype"
    potency = "potency"
    differentiation = "differentiation"
    plastic_adherence = "plastic_adherence"


class Timepoint(StrEnum):
    in_process = "in_process"
    pre_cryo = "pre_cryo"
    post_thaw = "post_thaw"


class ResultStatus(StrEnum):
    final = "final"
    pending = "pending"


class QualitativeResult(StrEnum):
    negative = "negative"
    positive = "positive"
    no_growth = "no_growth"
    normal = "normal"
    abnormal = "abnormal"


class Operator(StrEnum):
    ge = "≥"
    le = "≤"
    lt = "<"
    gt = ">"
    eq = "="
    in_ = "in"


class PersonalDataLevel(StrEnum):
    anonymous = "anonymous"
    pseudonymised = "pseudonymised"
    none = "none"


class AccessRights(StrEnum):
    public = "public"
    restricted = "restricted"
    non_public = "non_public"


class Sensitivity(StrEnum):
    direct_identifier = "direct_identifier"
    quasi_identifier = "quasi_identifier"
    sensitive = "sensitive"
    plain = "plain"


class VersionStatus(StrEnum):
    draft = "draft"
    published = "published"


class Severity(StrEnum):
    error = "error"
    warning = "warning"
