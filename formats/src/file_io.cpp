// Implemented by the formats work (issue 2).
