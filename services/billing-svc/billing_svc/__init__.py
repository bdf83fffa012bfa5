"""billing-svc: rentals from unlock to return, pricing, and charge requests."""
