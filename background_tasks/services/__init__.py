"""badge_service, presence_service, call_service, coin_deduction_service."""
