"""Model calls: the one gateway every call goes through, and what it calls.

- `gateway.ModelGateway`: estimate, reserve budget, degrade or fall back, pace, call
  the backend, price the answer; `accounting.CallAccountant` writes its ledger rows.
- `budget`: the hook the gateway reserves against (`ibot.services.budgets` has the caps).
- `pacing`: the queue and rate-limit pacer for OpenAI.
- backends: `openai_backend` (AsyncOpenAI only) and `local` (a GPT-2-family model on the
  admins' own GPU: `local_prompt`, `local_worker`, `local_engine`); `serve_local` serves
  the local model over an OpenAI-compatible API.

The types they share live in `ibot.domain`, below everything.
"""
