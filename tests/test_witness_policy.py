"""C2SP tlog-policy parsing (ledger.spec.witness_policy): the spec's own example is accepted and its
quorum evaluated; every construct the spec forbids is refused with one `FILE:LINE: what` error."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InputError
from ledger.spec.keys import SigningKey
from ledger.spec.note import (
    TreeHead,
    add_signatures,
    cosign,
    sign_tree_head,
    verify_cosignatures,
    vkey,
    witness_vkey,
)
from ledger.spec.witness_policy import parse_witness_policy

LOG_KEY = SigningKey.from_seed(bytes(32))
KEYS = {name: SigningKey.from_seed(bytes([i + 1]) * 32) for i, name in enumerate("ABCDEFGH")}
LOG = vkey("example.com/log", LOG_KEY.public)


def wkey(letter: str, key_name: str | None = None) -> str:
    return witness_vkey(key_name or f"witness.example/{letter}", KEYS[letter].public)


# c2sp.org/tlog-policy "Example policy", with real vkeys in place of <vkey>
SPEC_EXAMPLE = f"""log {LOG}

witness X1 {wkey("A")}
witness X2 {wkey("B")}
witness X3 {wkey("C")}
group X-witnesses 2 X1 X2 X3

witness Y1 {wkey("D")}
witness Y2 {wkey("E")}
witness Y3 {wkey("F")}
group Y-witnesses any Y1 Y2 Y3

group X-and-Y all X-witnesses Y-witnesses
quorum X-and-Y
"""


def test_the_spec_example_parses() -> None:
    policy = parse_witness_policy(SPEC_EXAMPLE, "example.policy")
    assert [log.name for log in policy.logs] == ["example.com/log"]
    assert policy.logs[0].public == LOG_KEY.public and policy.logs[0].url is None
    assert [w.name for w in policy.witnesses] == ["X1", "X2", "X3", "Y1", "Y2", "Y3"]
    assert policy.witness("Y2").key_name == "witness.example/E"
    assert policy.witness("Y2").public == KEYS["E"].public
    assert policy.groups["X-witnesses"] == (2, ("X1", "X2", "X3"))
    assert policy.groups["Y-witnesses"] == ("any", ("Y1", "Y2", "Y3"))
    assert policy.groups["X-and-Y"] == ("all", ("X-witnesses", "Y-witnesses"))
    assert policy.quorum == "X-and-Y"


@pytest.mark.parametrize(
    ("cosigned", "met"),
    [
        ({"X1", "X2", "Y3"}, True),
        ({"X1", "X3", "Y1", "Y2"}, True),
        ({"X1", "X2", "X3"}, False),  # no Y
        ({"X1", "Y1", "Y2", "Y3"}, False),  # one X of the two needed
        (set(), False),
        ({"Z9", "X1", "X2"}, False),  # unknown names count for nothing
    ],
)
def test_the_spec_example_quorum(cosigned: set[str], met: bool) -> None:
    policy = parse_witness_policy(SPEC_EXAMPLE)
    assert policy.satisfied(cosigned) is met
    explanation = policy.explain(cosigned)
    assert "\n" not in explanation
    assert ("is met" in explanation) is met


def test_explain_names_what_is_missing() -> None:
    text = parse_witness_policy(SPEC_EXAMPLE).explain({"X1", "Y1"})
    assert text.startswith("quorum X-and-Y is not met: ")
    assert "group X-witnesses needs 2 of 3, has 1" in text
    assert "no cosignature from witness X2" in text and "Y-witnesses" not in text


def test_quorum_none_single_witness_urls_comments_and_whitespace() -> None:
    none = parse_witness_policy(f"log {LOG} https://log.example/\nquorum none\n")
    assert none.satisfied([]) and none.logs[0].url == "https://log.example/"
    assert none.witnesses == ()
    policy = parse_witness_policy(
        "# a comment\n"
        "   # an indented comment\n"
        "\t \n"
        f"  witness\tW1  {wkey('A')}   http://127.0.0.1:8080/   \n"
        "quorum W1"  # no final newline
    )
    assert policy.witness("W1").url == "http://127.0.0.1:8080/"
    assert policy.logs == ()  # logs are optional
    assert policy.satisfied({"W1"}) and not policy.satisfied(set())


def test_cosignatures_map_to_policy_names() -> None:
    policy = parse_witness_policy(SPEC_EXAMPLE)
    note = sign_tree_head(TreeHead("example.com/log", 3, bytes(32)), LOG_KEY)
    lines = [cosign(note, KEYS[k], f"witness.example/{k}", 1).line() for k in ("A", "B", "D", "H")]
    found = verify_cosignatures(add_signatures(note, lines), policy.cosigners())
    names = policy.cosigned_names(found)
    assert names == {"X1", "X2", "Y1"}  # H is no policy witness
    assert policy.satisfied(names)


def test_k_may_be_written_with_leading_zeros_and_equal_n() -> None:
    policy = parse_witness_policy(
        f"witness A {wkey('A')}\nwitness B {wkey('B')}\ngroup G 02 A B\nquorum G\n"
    )
    assert policy.groups["G"] == (2, ("A", "B"))
    assert not policy.satisfied({"A"}) and policy.satisfied({"A", "B"})


@settings(max_examples=60, deadline=None)
@given(k=st.integers(1, 5), n=st.integers(1, 5), cosigned=st.sets(st.integers(0, 4)))
def test_a_k_of_n_group_agrees_with_counting(k: int, n: int, cosigned: set[int]) -> None:
    if k > n:
        return
    letters = "ABCDE"[:n]
    text = "".join(f"witness {c} {wkey(c)}\n" for c in letters)
    text += f"group G {k} {' '.join(letters)}\nquorum G\n"
    names = {letters[i] for i in cosigned if i < n}
    assert parse_witness_policy(text).satisfied(names) is (len(names) >= k)


def test_nested_groups_agree_with_brute_force() -> None:
    text = "".join(f"witness {c} {wkey(c)}\n" for c in "ABCDE")
    text += "group G1 any A B\ngroup G2 2 C D E\ngroup Q all G1 G2\nquorum Q\n"
    policy = parse_witness_policy(text)
    for size in range(6):
        for subset in itertools.combinations("ABCDE", size):
            chosen = set(subset)
            expected = bool(chosen & {"A", "B"}) and len(chosen & {"C", "D", "E"}) >= 2
            assert policy.satisfied(chosen) is expected


# each case: (policy text, line number of the error, words the message must hold)
A, B, C = wkey("A"), wkey("B"), wkey("C")
FORBIDDEN = {
    "duplicate-witness-key": (
        f"witness W1 {A}\nwitness W2 {wkey('A', 'another-name')}\nquorum W1\n",
        2,
        "duplicate witness key",
    ),
    "duplicate-log-key": (
        f"log {LOG}\nlog {vkey('other.example/log', LOG_KEY.public)}\nquorum none\n",
        2,
        "duplicate log key",
    ),
    "duplicate-witness-name": (
        f"witness W1 {A}\nwitness W1 {B}\nquorum W1\n",
        2,
        "already defined",
    ),
    "group-reuses-a-witness-name": (
        f"witness W1 {A}\ngroup W1 any W1\nquorum W1\n",
        2,
        "already defined",
    ),
    "unknown-member": (f"witness W1 {A}\ngroup G any W1 W2\nquorum G\n", 2, "'W2'"),
    "member-defined-later": (
        f"witness W1 {A}\ngroup G all W1 W2\nwitness W2 {B}\nquorum G\n",
        2,
        "not defined above",
    ),
    "unknown-quorum": (f"witness W1 {A}\nquorum W2\n", 2, "not defined above"),
    "quorum-before-definition": (f"quorum W1\nwitness W1 {A}\n", 1, "not defined above"),
    "none-as-member": (f"witness W1 {A}\ngroup G any W1 none\nquorum G\n", 2, "'none'"),
    "none-defined": (f"witness none {A}\nquorum none\n", 1, "predefined"),
    "member-twice": (f"witness W1 {A}\nwitness W2 {B}\ngroup G 2 W1 W1\nquorum G\n", 3, "twice"),
    "k-zero": (f"witness W1 {A}\ngroup G 0 W1\nquorum G\n", 2, "K in 1..1"),
    "k-above-n": (f"witness W1 {A}\nwitness W2 {B}\ngroup G 3 W1 W2\nquorum G\n", 3, "K in 1..2"),
    "k-negative": (f"witness W1 {A}\ngroup G -1 W1\nquorum G\n", 2, "K in 1..1"),
    "k-word": (f"witness W1 {A}\ngroup G most W1\nquorum G\n", 2, "'most'"),
    "group-without-members": (f"witness W1 {A}\ngroup G any\nquorum W1\n", 2, "member"),
    "no-quorum": (f"witness W1 {A}\n", 2, "no quorum line"),
    "two-quorums": (f"witness W1 {A}\nquorum W1\nquorum none\n", 3, "second quorum"),
    "unknown-keyword": (f"witness W1 {A}\nwitnes W2 {B}\nquorum W1\n", 2, "'witnes'"),
    "witness-log-vkey": (f"witness W1 {LOG}\nquorum W1\n", 1, "type 1"),
    "log-witness-vkey": (f"log {A}\nquorum none\n", 1, "algorithm 4"),
    "bad-vkey": (f"witness W1 {A[:-4]}\nquorum W1\n", 1, "witness W1"),
    "witness-missing-key": ("witness W1\nquorum none\n", 1, "witness NAME VKEY"),
    "witness-extra-field": (f"witness W1 {A} http://x/ extra\nquorum W1\n", 1, "found 4"),
    "quorum-two-names": (f"witness W1 {A}\nquorum W1 W1\n", 2, "quorum NAME"),
    "carriage-return": (f"witness W1 {A}\r\nquorum W1\n", 1, "control character"),
    "nul": ("# hi\x00\nquorum none\n", 1, "control character"),
    "delete": ("quorum none\x7f\n", 1, "control character"),
}


@pytest.mark.parametrize("case", sorted(FORBIDDEN))
def test_what_the_spec_forbids_is_refused_naming_file_and_line(case: str) -> None:
    text, line, words = FORBIDDEN[case]
    with pytest.raises(InputError) as caught:
        parse_witness_policy(text, "policies/w.policy")
    message = str(caught.value)
    assert message.startswith(f"policies/w.policy:{line}: "), message
    assert words in message, message
    assert "\n" not in message


def test_the_old_sigsum_example_listing_y2_twice_is_refused() -> None:
    # sigsum-go doc/policy.md's example once defined `witness Y2` twice; tlog-policy forbids it
    text = SPEC_EXAMPLE.replace("witness Y3", "witness Y2").replace("any Y1 Y2 Y3", "any Y1 Y2 Y2")
    with pytest.raises(InputError, match=r"^policy:10: Y2 is already defined"):
        parse_witness_policy(text)


def test_non_ascii_names_are_opaque_and_distinct() -> None:
    # tlog-policy: "K" and the Kelvin sign are different names
    policy = parse_witness_policy(
        f"witness K {wkey('A')}\nwitness \u212a {wkey('B')}\ngroup G all K \u212a\nquorum G\n"
    )
    assert not policy.satisfied({"K"}) and policy.satisfied({"K", "\u212a"})


def test_unknown_witness_lookup_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no witness 'Q'"):
        parse_witness_policy(SPEC_EXAMPLE).witness("Q")
