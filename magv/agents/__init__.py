"""The LLM agents of MAG-V: investigator (questions), responder (tool use), reverse engineer
(alternate questions), judge (the LLM baseline the verifier is compared with)."""
