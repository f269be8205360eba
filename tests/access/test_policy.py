"""The policy against DESIGN.md's table "Who may see and do what", row by row and column by column (no database).

Each case gives one outcome per principal, in the order of COLUMNS: H hidden (NotFound, as if missing),
F forbidden (seen, not allowed), A allowed. The owning institution is OWN throughout; "platform admin" belongs
to the other institution.
"""

import uuid

import pytest

from cellcommons.access.policy import (
    RULES,
    AccessRequestRecord,
    Action,
    AgreementRecord,
    AuditEntry,
    BatchRecord,
    CollectionRecord,
    DatasetVersionRecord,
    DonorRecord,
    InstitutionFacts,
    QcResultRecord,
    SpecificationRecord,
    can,
    not_found,
    require,
)
from cellcommons.auth.principal import Principal, Role
from cellcommons.catalogue.enums import AccessRights
from cellcommons.errors import Forbidden, NotFound

OWN, OTHER = uuid.uuid4(), uuid.uuid4()
SLUGS = {OWN: "leiden-scgt", OTHER: "maple-ccrm"}
KEY = uuid.uuid4()


def _member(institution: uuid.UUID, subject: str, *roles: Role) -> Principal:
    return Principal(
        institution_id=institution,
        institution_slug=SLUGS[institution],
        subject=subject,
        roles=frozenset({Role.reader, *roles}),
    )


PRINCIPALS: dict[str, Principal | None] = {
    "anonymous": None,
    "other reader": _member(OTHER, "other-reader"),
    "other submitter": _member(OTHER, "other-submitter", Role.submitter),
    "other steward": _member(OTHER, "other-steward", Role.steward),
    "other admin": _member(OTHER, "other-admin", Role.institution_admin),
    "own reader": _member(OWN, "own-reader"),
    "own submitter": _member(OWN, "own-submitter", Role.submitter),
    "own steward": _member(OWN, "own-steward", Role.steward),
    "own admin": _member(OWN, "own-admin", Role.institution_admin),
    "platform admin": _member(OTHER, "platform-admin", Role.platform_admin),
}
COLUMNS = list(PRINCIPALS)


def version(access: AccessRights, **facts) -> DatasetVersionRecord:
    return DatasetVersionRecord(institution_id=OWN, key=KEY, access_rights=access, **{"published": True, **facts})


def batch(*linked: AccessRights, kind: type = BatchRecord, **facts) -> BatchRecord:
    return kind(institution_id=OWN, key=KEY, linked_access_rights=frozenset(linked), **facts)


def audit(actor: str, institution: uuid.UUID) -> AuditEntry:
    return AuditEntry(actor=actor, institution=SLUGS[institution], key=42)


public, restricted, non_public = AccessRights.public, AccessRights.restricted, AccessRights.non_public
institution = InstitutionFacts(institution_id=OWN, key=OWN)
# Requested by OTHER's reader from OWN (the custodian); an agreement from OWN (provider) to OTHER (recipient).
request = AccessRequestRecord(institution_id=OWN, key=KEY, requester_institution_id=OTHER,
                              requester_actor="user:other-reader", submitted=True)  # fmt: skip
draft_request = AccessRequestRecord(institution_id=OWN, key=KEY, requester_institution_id=OTHER,
                                    requester_actor="user:other-reader", submitted=False)  # fmt: skip
agreement = AgreementRecord(institution_id=OWN, key=KEY, recipient_institution_id=OTHER)
harvested_institution = InstitutionFacts(institution_id=OWN, harvested=True, key=OWN)

#                                                                   anon  other  own   platform admin
#                                                                         r s t a  r s t a
CASES: list[tuple[str, object, list[Action], str]] = [
    # institutions, public facts; issuers and machine clients
    ("institution", institution, [Action.view], "H AAAA AAAA A"),
    ("institution", institution, [Action.create], "H FFFF FFFF A"),
    ("institution", institution, [Action.update, Action.manage_issuers, Action.manage_clients], "H FFFF FFFA A"),
    ("harvested institution", harvested_institution, [Action.update], "H FFFF FFFF F"),
    ("harvested institution", harvested_institution, [Action.manage_issuers], "H FFFF FFFA A"),
    # dataset metadata: public or restricted seen by all members; non_public (and drafts) as if missing
    ("public version", version(public), [Action.view], "H AAAA AAAA A"),
    ("restricted version", version(restricted), [Action.view], "H AAAA AAAA A"),
    ("non_public version", version(non_public, published=False), [Action.view], "H HHHH AAAA H"),
    ("published non_public version", version(non_public), [Action.view], "H HHHH AAAA H"),
    ("restricted draft", version(restricted, published=False), [Action.view], "H HHHH AAAA H"),
    # file contents, downloads, exports: stewards and submitters; others only under an active DUA
    ("public version", version(public), [Action.download], "H FFFF FAAF F"),
    ("restricted version", version(restricted), [Action.download], "H FFFF FAAF F"),
    ("restricted version under DUA", version(restricted, covered_by_active_dua=True), [Action.download],
     "H AAAA AAAA A"),
    ("non_public version", version(non_public, published=False), [Action.download], "H HHHH FAAF H"),
    ("harvested version", version(restricted, harvested=True), [Action.download], "H FFFF FAAF F"),
    # create / update / publish: submitters of the owner; never on harvested copies
    ("restricted version", version(restricted), [Action.create, Action.update, Action.publish], "H FFFF FAFF F"),
    ("non_public version", version(non_public, published=False), [Action.update, Action.publish], "H HHHH FAFF H"),
    ("harvested version", version(restricted, harvested=True), [Action.view], "H AAAA AAAA A"),
    ("harvested version", version(restricted, harvested=True), [Action.update, Action.publish], "H FFFF FFFF F"),
    # decide access requests, set DUA terms: stewards of the owner
    ("restricted version", version(restricted), [Action.decide_access_request, Action.set_dua_terms],
     "H FFFF FFAF F"),
    ("non_public version", version(non_public, published=False), [Action.decide_access_request], "H HHHH FFAF H"),
    ("harvested version", version(restricted, harvested=True), [Action.decide_access_request, Action.set_dua_terms],
     "H FFFF FFFF F"),
    # access requests: the requester sees and edits; the custodian's stewards see submitted ones and decide
    ("access request", request, [Action.view], "H AHHH HHAH H"),
    ("access request", request, [Action.update], "H AHHH HHFH H"),
    ("access request", request, [Action.decide_access_request], "H FHHH HHAH H"),
    ("draft access request", draft_request, [Action.view], "H AHHH HHHH H"),
    ("draft access request", draft_request, [Action.decide_access_request], "H FHHH HHHH H"),
    # agreements: both parties see; the provider's stewards set terms (revoke)
    ("agreement", agreement, [Action.view], "H AAAA AAAA A"),
    ("agreement", agreement, [Action.set_dua_terms], "H FFFF FFAF F"),
    # batches, specifications, QC results: seen by all, except batches linked only to non_public datasets
    ("specification", SpecificationRecord(institution_id=OWN, key=KEY), [Action.view], "H AAAA AAAA A"),
    ("specification", SpecificationRecord(institution_id=OWN, key=KEY), [Action.create, Action.update],
     "H FFFF FAFF F"),
    ("unlinked batch", batch(), [Action.view], "H AAAA AAAA A"),
    ("batch of restricted and non_public", batch(restricted, non_public), [Action.view], "H AAAA AAAA A"),
    ("batch only of non_public", batch(non_public), [Action.view], "H HHHH AAAA H"),
    ("batch", batch(public), [Action.create, Action.update], "H FFFF FAFF F"),
    ("batch only of non_public", batch(non_public), [Action.update], "H HHHH FAFF H"),
    ("harvested batch", batch(public, harvested=True), [Action.update], "H FFFF FFFF F"),
    ("batch", batch(public), [Action.download, Action.publish, Action.set_dua_terms], "H FFFF FFFF F"),
    ("unlinked QC result", batch(kind=QcResultRecord), [Action.view], "H AAAA AAAA A"),
    ("QC result of restricted", batch(restricted, kind=QcResultRecord), [Action.view], "H AAAA AAAA A"),
    ("QC result only of non_public", batch(non_public, kind=QcResultRecord), [Action.view], "H HHHH AAAA H"),
    ("QC result", batch(restricted, kind=QcResultRecord), [Action.create, Action.update], "H FFFF FAFF F"),
    # donors and collections: the owner's readers see, submitters edit; others as if missing
    ("donor", DonorRecord(institution_id=OWN, key=KEY), [Action.view], "H HHHH AAAA H"),
    ("donor", DonorRecord(institution_id=OWN, key=KEY), [Action.create, Action.update], "H HHHH FAFF H"),
    ("harvested donor", DonorRecord(institution_id=OWN, harvested=True, key=KEY), [Action.update], "H HHHH FFFF H"),
    ("collection", CollectionRecord(institution_id=OWN, key=KEY), [Action.view], "H HHHH AAAA H"),
    ("collection", CollectionRecord(institution_id=OWN, key=KEY), [Action.create, Action.update], "H HHHH FAFF H"),
    # audit events: one's own actions; stewards all of their institution's
    ("own reader's event", audit("user:own-reader", OWN), [Action.view], "H HHHH AHAH H"),
    ("other steward's event", audit("user:other-steward", OTHER), [Action.view], "H HHAH HHHH H"),
    ("own machine client's event", audit("client:sync", OWN), [Action.view], "H HHHH HHAH H"),
    ("own reader's event", audit("user:own-reader", OWN), [Action.update], "H HHHH FHFH H"),
    # subjects are unique per issuer only: another institution's "own-reader" is someone else
    ("namesake's event elsewhere", audit("user:own-reader", OTHER), [Action.view], "H HHAH HHHH H"),
]  # fmt: skip


def _expanded():
    for name, resource, actions, outcomes in CASES:
        codes = outcomes.replace(" ", "")
        assert len(codes) == len(COLUMNS), name
        for action in actions:
            for who, code in zip(COLUMNS, codes, strict=True):
                yield pytest.param(who, action, resource, code, id=f"{name}-{action}-{who}")


@pytest.mark.parametrize(("who", "action", "resource", "expected"), list(_expanded()))
def test_the_table(who, action, resource, expected):
    principal = PRINCIPALS[who]
    assert can(principal, action, resource) is (expected == "A")
    if expected == "A":
        require(principal, action, resource)
    else:
        with pytest.raises(NotFound if expected == "H" else Forbidden):
            require(principal, action, resource)


def test_every_rule_of_the_policy_is_in_the_table():
    exercised = {(action, type(resource)) for _, resource, actions, _ in CASES for action in actions}
    assert set(RULES) - exercised == set()


@pytest.mark.parametrize(
    "hidden",
    [
        version(non_public, published=False),
        batch(non_public),
        batch(non_public, kind=QcResultRecord),
        DonorRecord(institution_id=OWN, key=KEY),
        CollectionRecord(institution_id=OWN, key=KEY),
        audit("user:own-reader", OWN),
    ],
    ids=lambda r: r.label,
)
def test_hidden_answers_exactly_like_missing(hidden):
    """The error for a hidden record is the one a lookup of a missing record gives (`not_found`)."""
    with pytest.raises(NotFound) as caught:
        require(PRINCIPALS["other steward"], Action.view, hidden)
    assert caught.value.as_dict() == not_found(hidden.label, hidden.key).as_dict()
    assert caught.value.status == 404


def test_a_forbidden_action_says_what_was_refused():
    with pytest.raises(Forbidden) as caught:
        require(PRINCIPALS["own reader"], Action.download, version(restricted))
    assert caught.value.as_dict() == {"code": "forbidden", "message": "you may not download this dataset version"}


def test_a_steward_is_not_a_submitter_and_roles_do_not_carry_across_institutions():
    steward_elsewhere = Principal(
        institution_id=OTHER, institution_slug=SLUGS[OTHER], subject="s", roles=frozenset(Role)
    )
    assert not can(steward_elsewhere, Action.update, batch(public))
    assert not can(steward_elsewhere, Action.decide_access_request, version(restricted))
    assert not can(PRINCIPALS["own steward"], Action.update, batch(public))
