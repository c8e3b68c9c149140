"""English copy for the six plans."""

from __future__ import annotations

from typing import Final

from relance_sender.rendering.copy import CopyKey, StepCopy

LABELS: Final[dict[str, str]] = {
    "greeting_named": "Hi {name},",
    "greeting": "Hello,",
    "signature": "The {shop} team",
    "last_order": "Your last order",
    "order_number": "Order #{order_id} of {date}",
    "cart": "Your cart",
    "quantity": "Qty",
    "price": "Price",
    "total": "Total",
    "promo": "Your personal code",
    "promo_until": "valid until {date}",
    "recommendations": "Picked for you",
    "survey": "Tell us in one click",
    "very_satisfied": "Very satisfied",
    "satisfied": "Satisfied",
    "not_satisfied": "Not satisfied",
    "reasons": "Not coming back? Tell us why",
    "reasons_intro": "One click is enough: it helps us do better.",
    "reason_too_expensive": "Too expensive",
    "reason_found_elsewhere": "I found what I need elsewhere",
    "reason_no_longer_needed": "I no longer need it",
    "reason_bad_experience": "I had a bad experience",
    "reason_too_many_emails": "Too many emails",
    "reason_other": "Another reason",
    "reassurance": "Shop with peace of mind",
    "reassurance_payment": "100% secure payment (card, PayPal)",
    "reassurance_refunds": "Free returns and refunds within 30 days",
    "reassurance_delivery": "Tracked delivery, shipped within 48 hours",
    "loyalty": "Your loyalty programme",
    "loyalty_tier": "Your current tier: {tier}",
    "loyalty_intro": "Every order takes you further: Discovery, Regular, Premium, then Ambassador,"
    " each with its own advantages.",
    "tier_discovery": "Discovery",
    "tier_recurrence": "Regular",
    "tier_premium": "Premium",
    "tier_ambassador": "Ambassador",
    "review": "Share your experience",
    "review_link": "Write a review",
    "support": "Customer service",
    "support_link": "Contact customer service",
    "unsubscribe_intro": "You are receiving this email as a customer or subscriber of {shop}.",
    "unsubscribe": "Unsubscribe",
    "sms_opt_out": "Reply STOP to opt out",
}

COPY: Final[dict[CopyKey, StepCopy]] = {
    # --- welcome pack -------------------------------------------------------------------
    ("welcome_pack", "welcome", "vip"): StepCopy(
        subject="Welcome to the {{ shop.name }} inner circle",
        preheader="Thank you for your first order: your VIP perks are waiting.",
        heading="Thank you, and welcome to our VIP circle",
        paragraphs=(
            "Your first order has just reached us and the whole team thanks you for it.",
            "Because you trusted us from day one, you are joining our inner circle: early "
            "access to new arrivals, private sales and priority customer care.",
            "We are packing your parcel with care and will let you know as soon as it ships.",
        ),
        cta_label="Discover my perks",
        cta_url="{{ shop.url }}",
        blocks=("loyalty",),
        sms="Thanks for your first order! Your VIP perks are waiting: {{ shop.url }}",
    ),
    ("welcome_pack", "welcome", "standard"): StepCopy(
        subject="Welcome to {{ shop.name }}!",
        preheader="Thank you for your first order.",
        heading="Thank you for your first order",
        paragraphs=(
            "We are delighted to count you among our customers.",
            "Your order is in good hands: we are preparing it with care and will let you "
            "know as soon as it ships.",
            "Every order moves you up our loyalty programme: see what is in store for you.",
        ),
        cta_label="Visit the shop",
        cta_url="{{ shop.url }}",
        blocks=("loyalty",),
        sms="Welcome! Thanks for your first order. See you soon at {{ shop.url }}",
    ),
    ("welcome_pack", "second_purchase", "star"): StepCopy(
        subject="Our signature range, picked for you",
        preheader="Premium pieces chosen from your first order.",
        heading="Ready for something exceptional?",
        paragraphs=(
            "Your first order told us a little about your taste: here is a selection from "
            "our premium range we think you will love.",
            "Your next order brings you closer to Premium status and its exclusive perks.",
        ),
        cta_label="See the premium selection",
        cta_url="{{ shop.url }}",
        blocks=("recommendations", "loyalty"),
        sms="Our premium selection, picked for you: {{ shop.url }}",
    ),
    ("welcome_pack", "second_purchase", "standard"): StepCopy(
        subject="A selection just for you",
        preheader="Our best sellers, chosen from your first order.",
        heading="We thought of you",
        paragraphs=(
            "Enjoyed your first order? Here are a few customer favourites that match your taste.",
            "Good to know: every order earns you perks in our loyalty programme.",
        ),
        cta_label="See the selection",
        cta_url="{{ shop.url }}",
        blocks=("recommendations", "loyalty"),
        sms="A selection just for you is waiting: {{ shop.url }}",
    ),
    # --- anti-churn ---------------------------------------------------------------------
    ("anti_churn", "reminder_1", None): StepCopy(
        subject="We miss you… here is a gift",
        preheader="A personal code to celebrate your return.",
        heading="It has been a while!",
        paragraphs=(
            "Your last order was on {{ last_order.at | date }} and we miss you.",
            "To welcome you back, here is a personal code: {{ coupon.discount }} off your "
            "next order.",
        ),
        cta_label="Back to the shop",
        cta_url="{{ shop.url }}",
        blocks=("last_order", "promo", "reasons"),
        sms="We miss you! {{ coupon.discount }} off with code {{ coupon.code }} "
        "until {{ coupon.expires_at | date }}: {{ shop.url }}",
    ),
    ("anti_churn", "reminder_2", None): StepCopy(
        subject="Your code {{ coupon.code }} expires soon",
        preheader="Only a few days left to use it.",
        heading="Your welcome-back offer ends soon",
        paragraphs=(
            "Your code {{ coupon.code }} ({{ coupon.discount }} off) is only valid until "
            "{{ coupon.expires_at | date }}.",
            "Order with peace of mind: secure payment, tracked delivery and free returns.",
        ),
        cta_label="Use my code",
        cta_url="{{ shop.url }}",
        blocks=("promo", "reassurance", "reasons"),
        sms="Only a few days left: {{ coupon.discount }} off with {{ coupon.code }} "
        "until {{ coupon.expires_at | date }}. {{ shop.url }}",
    ),
    ("anti_churn", "reminder_3", None): StepCopy(
        subject="One last treat for you",
        preheader="A different offer, and a question.",
        heading="One last offer, just for you",
        paragraphs=(
            "We would really love to see you again: here is a new offer, "
            "{{ coupon.discount }} off until {{ coupon.expires_at | date }}.",
            "And if something let you down, tell us: your feedback helps us do better.",
        ),
        cta_label="See what is new",
        cta_url="{{ shop.url }}",
        blocks=("promo", "reasons", "support"),
        sms="One last treat: {{ coupon.discount }} off with {{ coupon.code }} "
        "until {{ coupon.expires_at | date }}. {{ shop.url }}",
    ),
    # --- birthday -----------------------------------------------------------------------
    ("birthday", "wishes", None): StepCopy(
        subject="Happy birthday! A gift is waiting for you",
        preheader="The whole team wishes you a wonderful birthday.",
        heading="Happy birthday!",
        paragraphs=(
            "Everyone at {{ shop.name }} wishes you a wonderful birthday.",
            "To celebrate, here is your gift: {{ coupon.discount }} off with your personal "
            "code, to use before {{ coupon.expires_at | date }}.",
        ),
        cta_label="Choose my gift",
        cta_url="{{ shop.url }}",
        blocks=("promo",),
        sms="Happy birthday! {{ coupon.discount }} off with code {{ coupon.code }} "
        "until {{ coupon.expires_at | date }}: {{ shop.url }}",
    ),
    ("birthday", "reminder_1", None): StepCopy(
        subject="Your birthday gift is still waiting",
        preheader="Your code is valid until {{ coupon.expires_at | date }}.",
        heading="Don't forget your gift",
        paragraphs=(
            "Your birthday code has not been used yet: it gives you {{ coupon.discount }} off "
            "until {{ coupon.expires_at | date }}.",
            "Treat yourself, now is the time!",
        ),
        cta_label="Use my code",
        cta_url="{{ shop.url }}",
        blocks=("promo",),
        sms="Your birthday gift is waiting: {{ coupon.code }} "
        "until {{ coupon.expires_at | date }}. {{ shop.url }}",
    ),
    ("birthday", "reminder_2", None): StepCopy(
        subject="Last days for your birthday gift",
        preheader="Your code expires on {{ coupon.expires_at | date }}.",
        heading="Your gift expires soon",
        paragraphs=(
            "Only a few days left to enjoy {{ coupon.discount }} off with your birthday code: "
            "it expires on {{ coupon.expires_at | date }}.",
        ),
        cta_label="Use it before it ends",
        cta_url="{{ shop.url }}",
        blocks=("promo",),
        sms="Last days! Your code {{ coupon.code }} expires on "
        "{{ coupon.expires_at | date }}. {{ shop.url }}",
    ),
    # --- abandoned cart (no discount: reassurance instead) -------------------------------
    ("abandoned_cart", "reminder_1", None): StepCopy(
        subject="Did you forget something?",
        preheader="Your cart is waiting for you.",
        heading="Your cart is waiting",
        paragraphs=("You left a few items in your cart. We have kept them aside for you.",),
        cta_label="Complete my order",
        cta_url="{{ cart.url }}",
        blocks=("cart", "reassurance"),
        sms="Your cart is waiting ({{ cart['items'] | length }} item(s)): {{ cart.url }}",
    ),
    ("abandoned_cart", "reminder_2", None): StepCopy(
        subject="Your cart is still here (but not for long)",
        preheader="We keep it until {{ cart.clear_at | date }}.",
        heading="Your items are still waiting",
        paragraphs=(
            "Your cart is still available, but it will be cleared on "
            "{{ cart.clear_at | date }}: items are not reserved.",
            "A question about sizing, delivery or payment? Our customer service is happy to help.",
        ),
        cta_label="Back to my cart",
        cta_url="{{ cart.url }}",
        blocks=("cart", "reassurance", "support"),
        sms="Your cart will be cleared on {{ cart.clear_at | date }}. Complete it: {{ cart.url }}",
    ),
    ("abandoned_cart", "reminder_3", None): StepCopy(
        subject="Last reminder about your cart",
        preheader="Your items will not be kept much longer.",
        heading="Last reminder",
        paragraphs=(
            "This is our last reminder: your cart will be cleared soon.",
            "Secure payment, free returns, tracked delivery: everything is ready for your order.",
        ),
        cta_label="Order now",
        cta_url="{{ cart.url }}",
        blocks=("cart", "reassurance"),
        sms="Last reminder: your cart is still waiting: {{ cart.url }}",
    ),
    # --- cross-sell / up-sell -----------------------------------------------------------
    ("cross_sell", "recommendation", "cross_sell"): StepCopy(
        subject="The perfect match for your order",
        preheader="Items that go perfectly with your purchase.",
        heading="Complete your order",
        paragraphs=(
            "Following your order of {{ last_order.at | date }}, we picked a few items that "
            "go perfectly with it.",
        ),
        cta_label="See the suggestions",
        cta_url="{{ shop.url }}",
        blocks=("recommendations",),
        sms="The perfect match for your last order: {{ shop.url }}",
    ),
    ("cross_sell", "recommendation", "up_sell"): StepCopy(
        subject="Step up to our premium range",
        preheader="Even better models, picked for you.",
        heading="Ready to go further?",
        paragraphs=(
            "Enjoyed your order of {{ last_order.at | date }}? Discover our premium range: "
            "better quality, built to last.",
        ),
        cta_label="Discover the range",
        cta_url="{{ shop.url }}",
        blocks=("recommendations",),
        sms="Discover our premium range, picked for you: {{ shop.url }}",
    ),
    ("cross_sell", "reminder", None): StepCopy(
        subject="Your suggestions are waiting",
        preheader="A personal selection, still available.",
        heading="Still tempted?",
        paragraphs=(
            "The suggestions we picked for you are still available. Have a look before they "
            "are gone!",
        ),
        cta_label="See the selection",
        cta_url="{{ shop.url }}",
        blocks=("recommendations", "reassurance"),
        sms="Your personal suggestions are waiting: {{ shop.url }}",
    ),
    # --- satisfaction survey ------------------------------------------------------------
    ("satisfaction_survey", "survey", None): StepCopy(
        subject="Did you enjoy your order?",
        preheader="Answer in one click.",
        heading="Your opinion matters",
        paragraphs=(
            "You received your order #{{ order_id }} a few days ago. What did you think?",
            "One click is all it takes to answer.",
        ),
        blocks=("survey",),
        sms="Did you enjoy order {{ order_id }}? Tell us: {{ shop.url }}",
    ),
    ("satisfaction_survey", "thank_you", None): StepCopy(
        subject="Thank you for your feedback!",
        preheader="Share your experience.",
        heading="Thank you so much!",
        paragraphs=(
            "We are delighted you enjoyed your order.",
            "Your opinion can help other customers: a few words on our review page would "
            "mean a lot. And come and say hello on social media!",
        ),
        cta_label="Write a review",
        cta_url="{{ shop.review_url }}",
        blocks=("review",),
        sms="Thanks for your feedback! Leave a review: {{ shop.review_url }}",
    ),
    ("satisfaction_survey", "reassurance", None): StepCopy(
        subject="We are sorry, and we will make it right",
        preheader="Our customer service will get back to you.",
        heading="We are sorry",
        paragraphs=(
            "You are not satisfied with your order #{{ order_id }}, and we are truly sorry.",
            "Our customer service team has been told and will contact you very soon. You can "
            "also write to us right now.",
        ),
        cta_label="Contact customer service",
        cta_url="{{ shop.support_url }}",
        sms="Sorry about order {{ order_id }}. Our customer service will contact you: "
        "{{ shop.support_url }}",
    ),
}
