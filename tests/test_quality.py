"""The rule checks of generated questions (magv/quality.py), on the real failures the embedded
model wrote (issue 29 and the committed real-model set), and their repairs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from magv.domains import load_domain
from magv.quality import (
    Need,
    check_question,
    first_request,
    identifier_patterns,
    identifiers,
    needed_values,
    repair,
    requests,
    target_values,
    voice_reasons,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def retail():
    d = load_domain("retail")
    return {s.id: s for s in d.seeds()}, {t.name: t for t in d.tools}, identifier_patterns(d.tools)


@pytest.fixture(scope="module")
def logs():
    d = load_domain("logs")
    return {s.id: s for s in d.seeds()}, {t.name: t for t in d.tools}, identifier_patterns(d.tools)


def needs_of(domain, seed_id):
    seeds, specs, _ = domain
    return needed_values(seeds[seed_id], specs)


# -- what a target needs from the customer ---------------------------------------------------------


def test_needed_values_are_what_the_seed_customer_states_not_what_a_tool_finds(retail, logs):
    # the tracking number comes from get_order_details, the customer id from the email lookup
    assert needs_of(retail, "retail-where-is-package") == [
        Need("email", "elizabeth.williams44@example.com"), Need("order_id", "W1000856")]  # fmt: skip
    assert [(n.param, n.value) for n in needs_of(retail, "retail-name-zip-orders")] == [
        ("first_name", "Thomas"), ("last_name", "Martin"), ("zip", "85081")]  # fmt: skip
    # a time argument needs a time when the seed's customer gave one ("yesterday afternoon")
    assert needs_of(logs, "logs-checkout-failures") == [Need("time", "yesterday afternoon", "time")]
    # host app-03 is stated; the relative start -4h was the assistant's choice (no time in the question)
    assert needs_of(logs, "logs-disk-app03") == [Need("host", "app-03")]
    # an enum argument (status open) is the assistant's reading of the request
    assert needs_of(logs, "logs-open-alerts") == []


@pytest.mark.parametrize("name", ["retail", "logs"])
def test_every_hand_written_seed_passes_its_own_checks(name, request):
    seeds, specs, patterns = request.getfixturevalue(name)
    failing = {
        s.id: check_question(
            s.question, needed_values(s, specs), None, patterns, target_values(s.trajectory)
        ).reasons
        for s in seeds.values()
    }
    assert {k: v for k, v in failing.items() if v} == {}


# -- answerable: the investigator's real questions -------------------------------------------------


def test_questions_without_what_the_target_needs_are_not_answerable(retail, logs):
    # quoted in issue 29: no email, no order
    c = check_question(
        "I need to return my order for a different size. Can you help me with that?",
        needs_of(retail, "retail-return-charger"),
    )
    assert c.answerable is False and not c.passed
    assert c.reasons == ["missing email joshua.walker16@example.com", "missing order_id W1000855"]
    c = check_question(
        "Can you please update my shipping address to 123 Elm St, Anytown, CA 90210?",
        needs_of(retail, "retail-change-address"),
    )
    assert c.answerable is False and "missing email david.carter27@example.com" in c.reasons
    # from the real-model set: an order id that is a customer id, and no name or zip
    c = check_question(
        "Can you please verify if my order with the order ID C00397 has been shipped yet?",
        needs_of(retail, "retail-name-zip-orders"),
    )
    assert c.reasons == ["missing first_name Thomas", "missing last_name Martin", "missing zip 85081"]
    # a target that needs yesterday afternoon's alerts, asked about "right now"
    c = check_question(
        "Are there any incidents occurring right now?", needs_of(logs, "logs-site-broken-full")
    )
    assert c.reasons == ["missing a time"]


def test_a_question_that_states_the_values_is_answerable(retail, logs):
    assert check_question(
        "Hey, can you tell me if order #W1000858 has shipped? My email is ethan.lopez68@example.com",
        needs_of(retail, "retail-shipped-yet"),
    ).passed
    assert check_question(
        "Checkout kept failing on Saturday between 12:00 and 18:00, what broke?",
        needs_of(logs, "logs-checkout-failures"),
    ).passed
    assert check_question(
        "I'm looking for wireless headphones under $200.", needs_of(retail, "retail-headphones-budget")
    ).passed
    assert not check_question(
        "I'm looking for wireless headphones under $2000.", needs_of(retail, "retail-headphones-budget")
    ).passed


def test_an_identifier_the_target_does_not_use_makes_a_question_unanswerable(retail):
    seeds, specs, patterns = retail
    seed = seeds["retail-order-history"]
    # written by the investigator after the change: an order id the target never acts on
    text = "Hello, I need to cancel my order #W1002345. I don't know my email."
    c = check_question(text, needed_values(seed, specs), None, patterns, target_values(seed.trajectory))
    assert c.answerable is False
    assert "wrong identifier W1002345 (the target does not use it)" in c.reasons
    fixed, c = repair(text, needed_values(seed, specs), None, patterns, target_values(seed.trajectory))
    assert not c.passed  # the email is appended, the wrong order stays: not repairable
    # the customer id a lookup finds is a value of the target: stating it is not wrong
    text = "Can you list all orders for customer C00440? My email is priya.gonzalez2@example.com."
    assert check_question(
        text, needed_values(seed, specs), None, patterns, target_values(seed.trajectory)
    ).passed


# -- voice: the reverse engineer's real alternates ------------------------------------------------

ASSISTANT_SIDE = [
    # quoted in issue 29
    "Could you please provide more details about the issue you're experiencing? I'd be happy to help if I can "
    "understand it better. Is there anything specific that is causing this problem for you?",
    "Can you please provide your full name? I need to verify the email address to assist you further,",
    "Is there anything else I can assist you with?",
    # written by the reverse engineer after the change (bench/dataset_quality.py reverse)
    "Could you please provide me with the order number that was originally placed using this email address? "
    "I'm concerned about any discrepancies between our records and your information.",
    "Do you need further assistance with your order? I'm here if you have any questions or need additional "
    "information about the products or services offered on our platform.",
]
CHAINED = [
    # quoted in issue 29 (4 questions)
    "What is my customer ID and where can I find it on my account? Is it possible to modify it if needed? Can "
    "you help me with any other inquiries about my order or shipping status? Are there any options for "
    "returning or exchanging items within the specified timeframe?",
    "Why is the order W1000858 not shipped yet? Is there any reason for this delay? Can you check on the status "
    "of the shipment and provide an estimated delivery date?",
    # cut off by the length limit before its third question mark
    "Did you check if any users logged into the 'admin' service within the last 24 hours? If yes, could you "
    "please provide the username and date of login? If no, are there any alerts or incidents reported from "
    "the 'admin' service in the last 24h",
    "Could you please list all the delivered orders of customer C00007? Also, can you provide me with the product "
    "details for P1009? Lastly, I want to exchange my items from W1000850 using the gift card pm_00014.",
]
CUSTOMER = [
    "Where is my package?? Order W1000856 should have arrived by now. I'm elizabeth.williams44@example.com",
    "Do you guys sell hiking boots? How much are they and which sizes do you have?",
    "Does your espresso machine come with a built-in grinder? How much is that version?",
    "Customers said the site was broken yesterday afternoon. What happened, how bad was it, and is it fixed now?",
]


@pytest.mark.parametrize("text", ASSISTANT_SIDE)
def test_the_assistants_side_is_not_a_customer_voice(text):
    reasons = voice_reasons(text)
    assert reasons and reasons[0].startswith("assistant voice")


@pytest.mark.parametrize("text", CHAINED)
def test_three_or_more_chained_requests_are_not_one_request(text):
    assert requests(text) >= 3
    assert any(r.endswith("requests chained") for r in voice_reasons(text))


@pytest.mark.parametrize("text", CUSTOMER)
def test_customer_requests_pass_the_voice_check(text):
    assert voice_reasons(text) == []


def test_an_alternate_must_carry_its_base_questions_identifiers(retail):
    _, _, patterns = retail
    base = "Has my order W1000858 shipped yet? It's ethan.lopez68@example.com"
    ids = identifiers(base, patterns, needs_of(retail, "retail-shipped-yet"))
    assert ids == ["ethan.lopez68@example.com", "W1000858"]
    # a real alternate of this base question: the order but not the email, and four requests
    c = check_question(CHAINED[1], None, ids)
    assert c.identifiers is False and c.voice is False
    assert "missing identifier ethan.lopez68@example.com" in c.reasons


# -- repairs --------------------------------------------------------------------------------------


def test_a_chain_is_cut_to_its_first_request_and_the_identifiers_appended(retail):
    _, _, patterns = retail
    ids = ["ethan.lopez68@example.com", "W1000858"]
    fixed, check = repair(CHAINED[1], None, ids, patterns)
    assert fixed == "Why is the order W1000858 not shipped yet? My email is ethan.lopez68@example.com."
    assert check.passed and check.original == CHAINED[1]
    assert check.repair == "kept the first request; appended email"
    assert any(r.startswith("before repair: ") for r in check.reasons)


def test_a_missing_value_is_appended_in_the_customers_words_and_a_wrong_one_replaced(retail, logs):
    _, _, patterns = retail
    fixed, check = repair(
        "I need to return my order for a different size. Can you help me with that?",
        needs_of(retail, "retail-return-charger"), None, patterns,
    )  # fmt: skip
    assert check.passed and fixed.endswith("My email is joshua.walker16@example.com. My order is W1000855.")
    # another email of the same form is replaced, not kept beside the right one
    fixed, check = repair("Has my order W1000858 shipped? It's john.doe@example.com",
                          needs_of(retail, "retail-shipped-yet"), None, patterns)  # fmt: skip
    assert fixed == "Has my order W1000858 shipped? It's ethan.lopez68@example.com" and check.passed
    fixed, check = repair("Who is responsible for incident INC-1001?", needs_of(logs, "logs-checkout-failures"),
                          None, identifier_patterns([]))  # fmt: skip
    assert fixed == "Who is responsible for incident INC-1001? I mean yesterday afternoon." and check.passed


def test_the_assistants_side_is_not_repaired():
    fixed, check = repair(ASSISTANT_SIDE[2], None, [])
    assert fixed == ASSISTANT_SIDE[2] and not check.passed and check.repair is None
    assert first_request(CUSTOMER[0]) == "Where is my package??"


# -- the committed real-model set: the "before" figures -------------------------------------------


def _bench():
    spec = importlib.util.spec_from_file_location("dataset_quality", REPO / "bench" / "dataset_quality.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_real_model_set_fails_the_checks_as_issue_29_describes():
    from magv.report.quality import summarize_checks

    rows = _bench().fixture_rows()
    q = summarize_checks(rows)
    inv, alt = q["investigator"], q["alternate"]
    assert inv["checked"] == 37 and alt["checked"] == 80
    # fewer than half of the investigator's questions are answerable; few alternates pass
    assert inv["rates"]["answerable"] < 0.5 and alt["pass_rate"] < 0.15
    assert alt["rates"]["voice"] < 0.25
    kinds = {f["check"] for f in alt["failures"]}
    assert {"voice: the assistant's side", "voice: requests chained", "identifiers"} <= kinds
    assert any(f["check"].startswith("answerable") for f in inv["failures"])
    assert all(f["examples"] for f in inv["failures"] + alt["failures"])
