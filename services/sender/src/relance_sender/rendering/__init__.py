"""Templates and their rendering: copy per plan, step, variant and locale, laid out as HTML,
plain text and SMS."""
