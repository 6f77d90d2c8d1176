"""The record: what the release tool remembers of an environment. The history (its
rows and the stack of good deployments, `history`), each run's publication kept on
the host until the server has it (`journal`), and the lock that lets one change run
at a time (`lock`)."""
