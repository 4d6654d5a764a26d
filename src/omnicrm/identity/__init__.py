"""Identity: pseudonymise personal data and link source records into one customer_id per person."""
