"""What a run leaves for people to read: model cards (and their templates) and figures."""
