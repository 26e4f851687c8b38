"""dianxiao: event-driven telephony voice agent for Chinese sales calls."""
