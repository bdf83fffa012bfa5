"""Virtual assets: coupons, red packets and cards, applied when a rental is charged."""
