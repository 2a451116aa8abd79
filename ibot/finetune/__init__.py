"""Fine-tuning a GPT-2-family model for the local fallback: `ibot finetune …`.

The pipeline, one module per step:

- `prepare`: character lines (CSV or `Name: line` transcripts) and solved forum threads
  become JSONL samples `{"context": [turns…], "response": "…"}` split into train and
  validation files;
- `export_threads`: reads the forums through the bot's Discord connection and writes
  the JSON export of solved threads that `prepare` reads;
- `train`: fine-tunes with the transformers Trainer, batches padded per batch (not to a
  fixed block), loss on the response, perplexity before and after;
- `chat`: talks to the result in the terminal, in the format it was trained on.

Nothing here imports torch or transformers at module level: `ibot --help` and the
bot itself must work without the `local` extra installed.
"""
