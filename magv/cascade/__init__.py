"""The verifier cascade: decide each verified trajectory by the cheapest confident step
(agreement rules, the verifier, alternates, the LLM judge) and queue the rest for a human, within
an LLM budget. `rules` holds the rules and the cost curve, `loop` the one decision loop and its
steps, `live` the oracle that runs the stages, `replay` the one that reads what is stored."""
