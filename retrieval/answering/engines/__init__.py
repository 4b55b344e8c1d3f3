"""Generator engines: the embedded SmolLM2 on transformers (``local``) or CTranslate2 (``ct2``), or any
OpenAI-compatible server (``remote``); ``loading`` picks the embedded engine and precision for this machine. All
implement ``base.GeneratorEngine``."""
