"""Learning the playbook from the best calls: one act set for both sides (acts), reading calls,
transcripts and outcomes (data), what wins per situation and the proposal (learn), playbook
versions (versions), simulated campaigns with arms (campaign) and their report (abtest)."""
