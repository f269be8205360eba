"""The shipped ontology subsets: DUO terms, the MONDO DAG, UBERON/CL terms and their MSC prefixes."""

import pytest

from cellcommons.catalogue import ontology
from cellcommons.catalogue.ontology import DuoKind, UnknownTerm

LUNG_CANCER, CANCER = "MONDO:0008903", "MONDO:0004992"
TYPE_1_DIABETES, COVID_19 = "MONDO:0005147", "MONDO:0100096"
DISEASE = ontology.MONDO_ROOT


def test_duo_has_the_23_terms_and_five_primaries():
    terms = ontology.duo_terms()
    assert len(terms) == 23
    assert {t.shorthand for t in terms.values() if t.is_primary} == {"NRES", "GRU", "HMB", "DS", "POA"}
    assert {t.kind for t in terms.values()} == {DuoKind.permission, DuoKind.modifier}


@pytest.mark.parametrize(
    ("shorthand", "curie", "parameter"),
    [
        ("DS", "DUO:0000007", "disease"),
        ("GS", "DUO:0000022", "region"),
        ("TS", "DUO:0000025", "months"),
        ("MOR", "DUO:0000024", "date"),
        ("PS", "DUO:0000027", "project"),
        ("IS", "DUO:0000028", "institutions"),
        ("US", "DUO:0000026", "users"),
        ("RS", "DUO:0000012", "research_type"),
        ("HMB", "DUO:0000006", None),
        ("NPUNCU", "DUO:0000018", None),  # older releases called this NPU
        ("NPU", "DUO:0000045", None),
        ("NCU", "DUO:0000046", None),
    ],
)
def test_duo_terms_and_their_parameters(shorthand, curie, parameter):
    term = ontology.duo_by_shorthand(shorthand)
    assert term.curie == curie and term.parameter == parameter
    assert ontology.duo_term(curie) is term


def test_unknown_duo_terms():
    assert ontology.duo_term("DUO:0000999") is None
    with pytest.raises(UnknownTerm):
        ontology.duo_by_shorthand("XYZ")


def test_mondo_subset_is_closed_and_reaches_the_root_from_every_class():
    classes = ontology.mondo_classes()
    assert len(classes) == 69
    for curie in classes.keys() - {DISEASE}:
        assert DISEASE in ontology.ancestors(curie), curie
    assert ontology.ancestors(DISEASE) == frozenset()


def test_mondo_release_is_noted():
    assert ontology.mondo_release() == "2026-08"


@pytest.mark.parametrize(
    ("curie", "ancestor", "expected"),
    [
        (LUNG_CANCER, CANCER, True),
        (CANCER, LUNG_CANCER, False),  # a "cancer" dataset does not serve a lung cancer-only question the other way
        (LUNG_CANCER, LUNG_CANCER, False),  # strict
        (TYPE_1_DIABETES, "MONDO:0007179", True),  # autoimmune disease, through its second parent
        (TYPE_1_DIABETES, "MONDO:0005066", True),  # metabolic disease, through the first
        (TYPE_1_DIABETES, "MONDO:0700096", True),  # the new human-disease layer
        ("MONDO:0005011", "MONDO:0005046", True),  # Crohn disease → IBD → immune system disorder
        ("MONDO:0005011", "MONDO:0004335", True),  # … and → intestinal disorder → digestive system disorder
        (COVID_19, DISEASE, True),  # nine levels down
        ("MONDO:0005301", "MONDO:0007179", True),  # multiple sclerosis is autoimmune
        ("MONDO:0005252", "MONDO:0005046", False),  # heart failure is not an immune disorder
    ],
)
def test_is_descendant_walks_the_dag(curie, ancestor, expected):
    assert ontology.is_descendant(curie, ancestor) is expected


def test_is_a_includes_the_class_itself():
    assert ontology.is_a(CANCER, CANCER)
    assert ontology.is_a(LUNG_CANCER, CANCER)
    assert not ontology.is_a(CANCER, LUNG_CANCER)


def test_depth_differs_between_branches():
    depths = {len(ontology.ancestors(c)) for c in (COVID_19, "MONDO:0005252", TYPE_1_DIABETES)}
    assert len(depths) > 1


def test_unknown_disease_is_refused_not_answered():
    assert not ontology.is_known_disease("MONDO:9999999")
    with pytest.raises(UnknownTerm, match="2026-08"):
        ontology.is_descendant("MONDO:9999999", DISEASE)


@pytest.mark.parametrize(
    ("curie", "prefix"),
    [
        ("UBERON:0002371", "BM"),
        ("UBERON:0001013", "AT"),
        ("UBERON:0002331", "UC"),
        ("UBERON:0003422", "WJ"),
        ("UBERON:0001987", None),  # placenta: no consortium prefix
        ("UBERON:9999999", None),
        ("CL:0002540", None),  # a cell type is not a tissue
    ],
)
def test_tissue_prefix(curie, prefix):
    assert ontology.tissue_prefix(curie) == prefix


def test_tissue_prefixes():
    assert ontology.tissue_prefixes() == {"BM", "AT", "UC", "WJ"}


@pytest.mark.parametrize(
    ("curie", "tissue", "cell_type"),
    [
        ("UBERON:0002371", True, False),
        ("UBERON:0000178", True, False),
        ("CL:0002540", False, True),
        ("CL:0000134", False, True),
        ("UBERON:0000002", False, False),
        ("CL:0000001", False, False),
    ],
)
def test_known_tissues_and_cell_types(curie, tissue, cell_type):
    assert ontology.is_known_tissue(curie) is tissue
    assert ontology.is_known_cell_type(curie) is cell_type


@pytest.mark.parametrize(
    ("curie", "label"),
    [
        ("UBERON:0003422", "mesenchyme of umbilical cord"),
        ("CL:0002568", "mesenchymal stem cell of Wharton's jelly"),
        ("MONDO:0000001", "disease"),
        ("DUO:0000007", "disease specific research"),
        ("MONDO:9999999", None),
    ],
)
def test_label(curie, label):
    assert ontology.label(curie) == label


def test_files_are_loaded_once():
    assert ontology.duo_terms() is ontology.duo_terms()
    assert ontology.mondo_classes() is ontology.mondo_classes()
