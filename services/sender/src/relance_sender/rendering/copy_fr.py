"""French copy for the six plans."""

from __future__ import annotations

from typing import Final

from relance_sender.rendering.copy import CopyKey, StepCopy

LABELS: Final[dict[str, str]] = {
    "greeting_named": "Bonjour {name},",
    "greeting": "Bonjour,",
    "signature": "L'équipe {shop}",
    "last_order": "Votre dernière commande",
    "order_number": "Commande n° {order_id} du {date}",
    "cart": "Votre panier",
    "quantity": "Quantité",
    "price": "Prix",
    "total": "Total",
    "promo": "Votre code personnel",
    "promo_until": "valable jusqu'au {date}",
    "recommendations": "Sélectionné pour vous",
    "survey": "Votre avis en un clic",
    "very_satisfied": "Très satisfait",
    "satisfied": "Satisfait",
    "not_satisfied": "Pas satisfait",
    "reasons": "Vous ne revenez pas ? Dites-nous pourquoi",
    "reasons_intro": "Un clic suffit : cela nous aide à nous améliorer.",
    "reason_too_expensive": "Trop cher",
    "reason_found_elsewhere": "J'ai trouvé ailleurs",
    "reason_no_longer_needed": "Je n'en ai plus besoin",
    "reason_bad_experience": "J'ai eu une mauvaise expérience",
    "reason_too_many_emails": "Trop d'e-mails",
    "reason_other": "Une autre raison",
    "reassurance": "Commandez l'esprit tranquille",
    "reassurance_payment": "Paiement 100 % sécurisé (carte bancaire, PayPal)",
    "reassurance_refunds": "Retours gratuits et remboursement sous 30 jours",
    "reassurance_delivery": "Livraison suivie, expédiée sous 48 h",
    "loyalty": "Votre programme de fidélité",
    "loyalty_tier": "Votre statut actuel : {tier}",
    "loyalty_intro": "Chaque commande vous fait progresser : Découverte, Récurrence, Premium puis"
    " Ambassadeur, chacun avec ses avantages.",
    "tier_discovery": "Découverte",
    "tier_recurrence": "Récurrence",
    "tier_premium": "Premium",
    "tier_ambassador": "Ambassadeur",
    "review": "Partagez votre expérience",
    "review_link": "Laisser un avis",
    "support": "Notre service client",
    "support_link": "Contacter le service client",
    "unsubscribe_intro": "Vous recevez cet e-mail car vous êtes client ou inscrit chez {shop}.",
    "unsubscribe": "Se désinscrire",
    "sms_opt_out": "STOP SMS",
}

COPY: Final[dict[CopyKey, StepCopy]] = {
    # --- welcome pack -------------------------------------------------------------------
    ("welcome_pack", "welcome", "vip"): StepCopy(
        subject="Bienvenue dans le cercle privilège {{ shop.name }}",
        preheader="Merci pour votre première commande : vos avantages VIP vous attendent.",
        heading="Merci, et bienvenue parmi nos clients privilégiés",
        paragraphs=(
            "Votre première commande vient de nous parvenir et toute l'équipe vous en remercie.",
            "Parce que vous nous avez fait confiance dès le premier achat, vous rejoignez "
            "notre cercle privilège : accès en avant-première aux nouveautés, ventes privées "
            "et un service client prioritaire.",
            "Nous préparons votre colis avec soin et vous tiendrons informé de son expédition.",
        ),
        cta_label="Découvrir mes avantages",
        cta_url="{{ shop.url }}",
        blocks=("loyalty",),
        sms="Merci pour votre 1re commande ! Vos avantages VIP vous attendent : {{ shop.url }}",
    ),
    ("welcome_pack", "welcome", "standard"): StepCopy(
        subject="Bienvenue chez {{ shop.name }} !",
        preheader="Merci pour votre première commande.",
        heading="Merci pour votre première commande",
        paragraphs=(
            "Nous sommes ravis de vous compter parmi nos clients.",
            "Votre commande est entre de bonnes mains : nous la préparons avec soin et vous "
            "préviendrons dès son expédition.",
            "Chaque commande vous fait progresser dans notre programme de fidélité : "
            "découvrez tout ce qui vous attend.",
        ),
        cta_label="Visiter la boutique",
        cta_url="{{ shop.url }}",
        blocks=("loyalty",),
        sms="Bienvenue ! Merci pour votre 1re commande. A tres vite sur {{ shop.url }}",
    ),
    ("welcome_pack", "second_purchase", "star"): StepCopy(
        subject="Notre gamme d'exception, choisie pour vous",
        preheader="Des pièces premium sélectionnées d'après votre première commande.",
        heading="Et si vous découvriez nos pièces d'exception ?",
        paragraphs=(
            "Votre première commande nous a donné une idée de vos goûts : voici une sélection "
            "de notre gamme premium qui devrait vous plaire.",
            "Votre prochaine commande vous rapproche du statut Premium et de ses avantages "
            "exclusifs.",
        ),
        cta_label="Voir la sélection premium",
        cta_url="{{ shop.url }}",
        blocks=("recommendations", "loyalty"),
        sms="Notre selection premium choisie pour vous vous attend : {{ shop.url }}",
    ),
    ("welcome_pack", "second_purchase", "standard"): StepCopy(
        subject="Une sélection rien que pour vous",
        preheader="Nos meilleures ventes, choisies d'après votre première commande.",
        heading="Nous avons pensé à vous",
        paragraphs=(
            "Vous avez aimé votre première commande ? Voici quelques articles plébiscités par "
            "nos clients, choisis pour aller avec vos goûts.",
            "Bon à savoir : chaque commande vous fait gagner des avantages dans notre "
            "programme de fidélité.",
        ),
        cta_label="Voir la sélection",
        cta_url="{{ shop.url }}",
        blocks=("recommendations", "loyalty"),
        sms="Une selection rien que pour vous vous attend : {{ shop.url }}",
    ),
    # --- anti-churn ---------------------------------------------------------------------
    ("anti_churn", "reminder_1", None): StepCopy(
        subject="Vous nous manquez… voici un cadeau",
        preheader="Un code personnel pour fêter votre retour.",
        heading="Cela fait un moment !",
        paragraphs=(
            "Votre dernière visite remonte au {{ last_order.at | date }} et vous nous manquez.",
            "Pour vous accueillir à nouveau, voici un code personnel : "
            "{{ coupon.discount }} sur votre prochaine commande.",
        ),
        cta_label="Revenir sur la boutique",
        cta_url="{{ shop.url }}",
        blocks=("last_order", "promo", "reasons"),
        sms="Vous nous manquez ! {{ coupon.discount }} avec le code {{ coupon.code }} "
        "jusqu'au {{ coupon.expires_at | date }} : {{ shop.url }}",
    ),
    ("anti_churn", "reminder_2", None): StepCopy(
        subject="Votre code {{ coupon.code }} expire bientôt",
        preheader="Plus que quelques jours pour en profiter.",
        heading="Votre offre de retour se termine bientôt",
        paragraphs=(
            "Votre code {{ coupon.code }} ({{ coupon.discount }}) n'est valable que jusqu'au "
            "{{ coupon.expires_at | date }}.",
            "Commandez l'esprit tranquille : paiement sécurisé, livraison suivie et retours "
            "gratuits.",
        ),
        cta_label="J'en profite",
        cta_url="{{ shop.url }}",
        blocks=("promo", "reassurance", "reasons"),
        sms="Plus que quelques jours : {{ coupon.discount }} avec {{ coupon.code }} "
        "jusqu'au {{ coupon.expires_at | date }}. {{ shop.url }}",
    ),
    ("anti_churn", "reminder_3", None): StepCopy(
        subject="Une dernière attention pour vous",
        preheader="Une offre différente, et une question.",
        heading="Une dernière offre, rien que pour vous",
        paragraphs=(
            "Nous aimerions vraiment vous revoir : voici une nouvelle offre, "
            "{{ coupon.discount }}, jusqu'au {{ coupon.expires_at | date }}.",
            "Et si quelque chose vous a déçu, dites-le nous : votre avis nous aide à "
            "nous améliorer.",
        ),
        cta_label="Voir les nouveautés",
        cta_url="{{ shop.url }}",
        blocks=("promo", "reasons", "support"),
        sms="Derniere attention : {{ coupon.discount }} avec {{ coupon.code }} "
        "jusqu'au {{ coupon.expires_at | date }}. {{ shop.url }}",
    ),
    # --- birthday -----------------------------------------------------------------------
    ("birthday", "wishes", None): StepCopy(
        subject="Joyeux anniversaire ! Un cadeau vous attend",
        preheader="Toute l'équipe vous souhaite un très bel anniversaire.",
        heading="Joyeux anniversaire !",
        paragraphs=(
            "Toute l'équipe {{ shop.name }} vous souhaite un merveilleux anniversaire.",
            "Pour l'occasion, voici votre cadeau : {{ coupon.discount }} avec votre code "
            "personnel, à utiliser avant le {{ coupon.expires_at | date }}.",
        ),
        cta_label="Choisir mon cadeau",
        cta_url="{{ shop.url }}",
        blocks=("promo",),
        sms="Joyeux anniversaire ! {{ coupon.discount }} avec le code {{ coupon.code }} "
        "jusqu'au {{ coupon.expires_at | date }} : {{ shop.url }}",
    ),
    ("birthday", "reminder_1", None): StepCopy(
        subject="Votre cadeau d'anniversaire vous attend toujours",
        preheader="Votre code est valable jusqu'au {{ coupon.expires_at | date }}.",
        heading="N'oubliez pas votre cadeau",
        paragraphs=(
            "Votre code d'anniversaire n'a pas encore servi : il vous offre "
            "{{ coupon.discount }} jusqu'au {{ coupon.expires_at | date }}.",
            "Faites-vous plaisir, c'est le moment !",
        ),
        cta_label="Utiliser mon code",
        cta_url="{{ shop.url }}",
        blocks=("promo",),
        sms="Votre cadeau d'anniversaire vous attend : {{ coupon.code }} "
        "jusqu'au {{ coupon.expires_at | date }}. {{ shop.url }}",
    ),
    ("birthday", "reminder_2", None): StepCopy(
        subject="Derniers jours pour votre cadeau d'anniversaire",
        preheader="Votre code expire le {{ coupon.expires_at | date }}.",
        heading="Votre cadeau expire bientôt",
        paragraphs=(
            "Il ne reste que quelques jours pour profiter de {{ coupon.discount }} avec votre "
            "code d'anniversaire : il expire le {{ coupon.expires_at | date }}.",
        ),
        cta_label="J'en profite avant la fin",
        cta_url="{{ shop.url }}",
        blocks=("promo",),
        sms="Derniers jours ! Votre code {{ coupon.code }} expire le "
        "{{ coupon.expires_at | date }}. {{ shop.url }}",
    ),
    # --- abandoned cart (no discount: reassurance instead) -------------------------------
    ("abandoned_cart", "reminder_1", None): StepCopy(
        subject="Vous avez oublié quelque chose ?",
        preheader="Votre panier vous attend.",
        heading="Votre panier vous attend",
        paragraphs=(
            "Vous avez laissé quelques articles dans votre panier. Nous les avons gardés "
            "de côté pour vous.",
        ),
        cta_label="Finaliser ma commande",
        cta_url="{{ cart.url }}",
        blocks=("cart", "reassurance"),
        sms="Votre panier vous attend ({{ cart['items'] | length }} article(s)) : {{ cart.url }}",
    ),
    ("abandoned_cart", "reminder_2", None): StepCopy(
        subject="Votre panier est toujours là (mais plus pour longtemps)",
        preheader="Nous le gardons jusqu'au {{ cart.clear_at | date }}.",
        heading="Vos articles vous attendent encore",
        paragraphs=(
            "Votre panier est toujours disponible, mais il sera vidé le "
            "{{ cart.clear_at | date }} : les articles ne sont pas réservés.",
            "Une question sur la taille, la livraison ou le paiement ? Notre service client "
            "vous répond.",
        ),
        cta_label="Retrouver mon panier",
        cta_url="{{ cart.url }}",
        blocks=("cart", "reassurance", "support"),
        sms="Votre panier sera vide le {{ cart.clear_at | date }}. Finalisez-le : {{ cart.url }}",
    ),
    ("abandoned_cart", "reminder_3", None): StepCopy(
        subject="Dernier rappel pour votre panier",
        preheader="Vos articles ne seront bientôt plus réservés.",
        heading="Dernier rappel",
        paragraphs=(
            "C'est notre dernier rappel : votre panier sera bientôt vidé.",
            "Paiement sécurisé, retours gratuits, livraison suivie : tout est prêt pour "
            "votre commande.",
        ),
        cta_label="Commander maintenant",
        cta_url="{{ cart.url }}",
        blocks=("cart", "reassurance"),
        sms="Dernier rappel : votre panier vous attend encore : {{ cart.url }}",
    ),
    # --- cross-sell / up-sell -----------------------------------------------------------
    ("cross_sell", "recommendation", "cross_sell"): StepCopy(
        subject="Le complément idéal de votre commande",
        preheader="Des articles qui vont parfaitement avec vos achats.",
        heading="Complétez votre commande",
        paragraphs=(
            "Suite à votre commande du {{ last_order.at | date }}, nous avons sélectionné "
            "des articles qui l'accompagnent parfaitement.",
        ),
        cta_label="Voir les suggestions",
        cta_url="{{ shop.url }}",
        blocks=("recommendations",),
        sms="Le complement ideal de votre derniere commande vous attend : {{ shop.url }}",
    ),
    ("cross_sell", "recommendation", "up_sell"): StepCopy(
        subject="Passez à la gamme supérieure",
        preheader="Des modèles encore plus performants, choisis pour vous.",
        heading="Envie d'aller plus loin ?",
        paragraphs=(
            "Vous avez aimé votre commande du {{ last_order.at | date }} ? Découvrez notre "
            "gamme supérieure : plus de qualité, plus de durabilité.",
        ),
        cta_label="Découvrir la gamme",
        cta_url="{{ shop.url }}",
        blocks=("recommendations",),
        sms="Decouvrez notre gamme superieure, choisie pour vous : {{ shop.url }}",
    ),
    ("cross_sell", "reminder", None): StepCopy(
        subject="Nos suggestions vous attendent",
        preheader="Une sélection personnalisée, toujours disponible.",
        heading="Toujours tenté ?",
        paragraphs=(
            "Nos suggestions choisies pour vous sont toujours disponibles. Jetez-y un œil "
            "avant qu'elles ne partent !",
        ),
        cta_label="Voir la sélection",
        cta_url="{{ shop.url }}",
        blocks=("recommendations", "reassurance"),
        sms="Vos suggestions personnalisees vous attendent : {{ shop.url }}",
    ),
    # --- satisfaction survey ------------------------------------------------------------
    ("satisfaction_survey", "survey", None): StepCopy(
        subject="Votre commande vous a-t-elle plu ?",
        preheader="Répondez en un clic.",
        heading="Votre avis compte",
        paragraphs=(
            "Vous avez reçu votre commande n° {{ order_id }} il y a quelques jours. "
            "Qu'en avez-vous pensé ?",
            "Un simple clic suffit pour nous répondre.",
        ),
        blocks=("survey",),
        sms="Votre commande {{ order_id }} vous a-t-elle plu ? Dites-le nous : {{ shop.url }}",
    ),
    ("satisfaction_survey", "thank_you", None): StepCopy(
        subject="Merci pour votre retour !",
        preheader="Partagez votre expérience.",
        heading="Merci beaucoup !",
        paragraphs=(
            "Nous sommes ravis que votre commande vous ait plu.",
            "Votre avis peut aider d'autres clients : quelques mots sur notre page d'avis "
            "nous feraient très plaisir. Et retrouvez-nous sur les réseaux sociaux !",
        ),
        cta_label="Laisser un avis",
        cta_url="{{ shop.review_url }}",
        blocks=("review",),
        sms="Merci pour votre retour ! Laissez un avis : {{ shop.review_url }}",
    ),
    ("satisfaction_survey", "reassurance", None): StepCopy(
        subject="Nous sommes désolés, nous allons arranger cela",
        preheader="Notre service client revient vers vous.",
        heading="Nous sommes désolés",
        paragraphs=(
            "Vous n'êtes pas satisfait de votre commande n° {{ order_id }}, et nous en sommes "
            "sincèrement désolés.",
            "Notre service client a été prévenu et va vous contacter très vite. Vous pouvez "
            "aussi nous écrire dès maintenant.",
        ),
        cta_label="Contacter le service client",
        cta_url="{{ shop.support_url }}",
        sms="Desoles pour votre commande {{ order_id }}. Notre service client vous contacte : "
        "{{ shop.support_url }}",
    ),
}
