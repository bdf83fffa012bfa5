"""Cabinet screens: the ad playlist notify-svc publishes, cut per cabinet by region and sent over MQTT."""
