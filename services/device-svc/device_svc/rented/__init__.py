"""The bank a user is renting (6.1.9): its battery and, with the user's consent, its last known position;
shown to the renter only (the map and the bank lookup never show where a rented bank is)."""
