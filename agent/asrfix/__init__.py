"""Domain-aware ASR correction: the sales lexicon as Whisper hot-words and a pinyin-similarity
post-correction of transcripts, guarded against over-correction, reporting what it changed.

    lexicon = build_lexicon("cloud_saas")
    engine.transcribe(pcm, hotwords=lexicon.prompt_terms())
    fixed = Corrector(lexicon).correct(asr_text)   # fixed.text, fixed.changes
"""

from agent.asrfix.correct import Change, Correction, Corrector
from agent.asrfix.lexicon import DomainLexicon, DomainTerm, LexiconError, build_lexicon

__all__ = ["Change", "Correction", "Corrector", "DomainLexicon", "DomainTerm", "LexiconError", "build_lexicon"]
