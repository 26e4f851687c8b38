"""Topic names.  One place, so a reader can find a stage from the topic it reads."""

AUDIO_IN = "audio.in"  # AudioFrame from the caller (connectors -> vad)
SPEECH = "speech.segments"  # SpeechStarted / SpeechSegment (vad -> asr)
TRANSCRIPTS = "transcripts"  # TranscriptPartial / TranscriptFinal (asr -> nlu)
NLU = "nlu.results"  # NluResult (nlu -> dst)
DIALOGUE = "dialogue.state"  # DialogueStateUpdated (dst -> policy)
DRAFTS = "bot.drafts"  # ReplyDraft (policy -> phrasing), only with LLM phrasing on
REPLIES = "bot.replies"  # BotReply (policy or phrasing -> tts, connectors)
AUDIO_OUT = "audio.out"  # AudioFrame from the bot, then ReplyAudioEnd (tts -> connectors)
CONTROL = "call.control"  # CallStarted / CallEnded / BargeIn / CallDtmf / ReplyPlayed / CallerSilent (everyone)
DEAD_LETTERS = "dead.letters"  # DeadLetter (any stage)

ALL = (AUDIO_IN, SPEECH, TRANSCRIPTS, NLU, DIALOGUE, DRAFTS, REPLIES, AUDIO_OUT, CONTROL, DEAD_LETTERS)

DESCRIPTIONS = {
    AUDIO_IN: "caller audio, 20 ms frames (8 kHz mu-law from the phone, or 16 kHz PCM16)",
    SPEECH: "speech start / complete utterances found by VAD and end-of-turn detection",
    TRANSCRIPTS: "ASR partial and final transcripts (text-mode calls write finals here directly)",
    NLU: "intents (multi-label, with scores) and normalised entities per final transcript",
    DIALOGUE: "the full dialogue state after each caller turn",
    DRAFTS: "template replies waiting for LLM phrasing (only when an LLM endpoint is configured)",
    REPLIES: "what the bot says next, with the policy action that chose it",
    AUDIO_OUT: "bot speech, 20 ms frames, 8 kHz mu-law, and where each reply's audio ends",
    CONTROL: "call start, end (hang-up), barge-in, key presses (DTMF), reply played out, caller silence",
    DEAD_LETTERS: "messages a stage could not handle, with the reason",
}
