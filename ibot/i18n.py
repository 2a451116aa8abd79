"""Every sentence iBot says to a user, in French (the default) and English, and the prompts.

Messages live here as code, not in files, so that a missing translation is a failing test
rather than a blank message in production: `t` falls back from the asked language to
French, and raises KeyError when neither has the key. French uses tutoiement, as on the
French tech Discords iBot serves.

An entry is either one template or a tuple of variants, most detailed first: `t` uses
the first variant whose placeholders all received a non-empty value. That keeps
"Le budget  est épuisé" (a blank where a name was expected) out of the chat when a caller
does not know the budget's name or reset time yet.

The model prompts (persona and templates) are TOML files in config/prompts/, one per
language, so that a community can reword them without touching code; `load_prompts`
checks that every template is there and uses only placeholders the services fill in.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_LANGUAGE = "fr"

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "config" / "prompts"

Entry = str | tuple[str, ...]

_FR: dict[str, Entry] = {
    "cost_footer": "Total tokens : {tokens} | Coût : {cost} USD",
    "local_footer": "Réponse du modèle local",
    "answer_title": "Réponse de {bot_name}",
    # One per ErrorKind (ibot/domain.py).
    "error.rate_limit": "Trop de demandes en ce moment, réessaie dans une minute.",
    "error.insufficient_quota": (
        "Le crédit OpenAI du serveur est épuisé. Les admins sont prévenus ; réessaie plus tard."
    ),
    "error.server_error": (
        "OpenAI a un souci de son côté en ce moment. Réessaie dans quelques minutes."
    ),
    "error.timeout": "OpenAI a mis trop de temps à répondre. Réessaie dans un instant.",
    "error.connection": "Impossible de joindre OpenAI pour l'instant. Réessaie dans un moment.",
    "error.bad_request": (
        "Je n'ai pas pu traiter ta demande telle quelle (trop longue, ou une pièce jointe "
        "refusée). Essaie de la raccourcir ou de la reformuler."
    ),
    "error.auth": "La clé OpenAI du bot est refusée. Préviens un admin.",
    "error.budget": (
        "Le budget {budget} est épuisé ; il se renouvelle {reset}.",
        "Le budget {budget} est épuisé pour le moment.",
        "Le budget IA est épuisé pour le moment. Réessaie plus tard.",
    ),
    "error.not_configured": (
        "L'IA n'est pas configurée ici (ni clé OpenAI, ni modèle local). Préviens un admin."
    ),
    "error.empty_question": "Ta question est vide : écris ce que tu veux demander.",
    "error.cancelled": "La demande a été annulée avant la fin.",
    "error.interrupted": "Le bot a redémarré pendant ta demande. Repose-la, s'il te plaît.",
    "error.other": "Une erreur inattendue est survenue. Réessaie dans un instant.",
    "error.generic": "Oups, quelque chose s'est mal passé de mon côté. Réessaie dans un instant.",
    "error.restarting": "Je redémarre : repose ta question dans une minute.",
    # Above an answer a restart cut off, delivered by the next start (ibot/services/resume.py).
    "resume.note": "🔄 Le bot a redémarré pendant ta demande ; voici ta réponse.",
    "forum.starter_missing": (
        "Je n'ai pas pu lire ton message : Discord ne me l'a pas transmis. Je ne répondrai "
        "pas à ce fil ; ouvre-en un nouveau si tu veux une réponse de ma part."
    ),
    "budget.guild_daily": "quotidien du serveur",
    "budget.guild_monthly": "mensuel du serveur",
    "budget.user_daily": "quotidien par membre",
    # A feature's own daily cap (ibot/services/budgets.py Cap.name): one per Feature.
    "budget.feature_daily:auto_reply": "quotidien des réponses du forum",
    "budget.feature_daily:ask": "quotidien de /ask-gpt",
    "budget.feature_daily:summary": "quotidien des résumés",
    "budget.feature_daily:chat": "quotidien du salon de discussion",
    "budget.feature_daily:kb_embed": "quotidien de l'indexation de la base de connaissances",
    "budget.fallback_footer": "Budget serré : modèle moins cher que {requested}",
    "budget.refused": "Seuls les admins peuvent consulter et changer les budgets.",
    "budget.invalid_amount": (
        "« {value} » n'est pas un montant valide : donne un nombre de dollars (0 ou plus), "
        "ou « none » pour retirer le plafond."
    ),
    "budget.no_cap": "pas de plafond",
    "budget.cap": "{amount} USD",
    "budget.set_done": "C'est noté : budget {budget} à {cap} (avant : {previous}).",
    "budget.show_title": "Budgets IA du serveur",
    "budget.show_line": (
        "**Budget {budget}** : {cap} — dépensé {spent} USD, réservé {reserved} USD ; "
        "se renouvelle {reset}. {source}"
    ),
    "budget.show_user_line": (
        "**Budget {budget}** : {cap} — toi aujourd'hui : {spent} USD ; "
        "se renouvelle {reset}. {source}"
    ),
    "budget.source_config": "(valeur de la config)",
    "budget.source_change": "(fixé par <@{user}> {when})",
    "budget.alert": (
        "⚠️ Budget {budget} : {percent} % atteint ({spent} / {cap} USD). Il se renouvelle {reset}."
    ),
    "budget.alert_spent": (
        "🛑 Budget {budget} épuisé ({spent} / {cap} USD) : les demandes passent au modèle "
        "moins cher ou sont refusées jusqu'au renouvellement, {reset}."
    ),
    "budget.alert_member": (
        "🛑 <@{user}> a atteint son plafond quotidien de {cap} USD ({spent} USD dépensés) : "
        "ses demandes passent au modèle moins cher ou sont refusées jusqu'au "
        "renouvellement, {reset}."
    ),
    "ask.refused_role": "Désolé, ton rôle ne te permet pas d'utiliser /ask-gpt ici.",
    "ask.cooldown": "Doucement ! Tu pourras reposer une question dans {seconds} s.",
    "ask.too_long": (
        "Ta question est trop longue ({tokens} tokens, maximum {limit}). "
        "Raccourcis-la ou découpe-la en plusieurs questions."
    ),
    "knowledge.sources_heading": "Discussions résolues similaires",
    "knowledge.already_solved": "✅ **Déjà résolu ici :** {link}",
    "similar.heading": "🔎 Discussions résolues similaires à « {query} » :",
    "similar.line": "{number}. {link} — score {score}",
    "similar.none": (
        "Aucune discussion résolue ne ressemble à ta recherche. "
        "Essaie d'autres mots-clés, ou pose ta question dans le forum."
    ),
    "similar.off": "La recherche de discussions résolues n'est pas activée sur ce serveur.",
    "similar.bad_query": (
        "Ta recherche ne contient aucun mot à chercher. "
        "Écris quelques mots-clés, par exemple « pip install erreur »."
    ),
    "feedback.solved_button": "✅ Résolu",
    "feedback.voted_up": "Merci ! Ton 👍 est compté.",
    "feedback.voted_down": "Merci, ton 👎 est compté : ça nous aide à améliorer les réponses.",
    "feedback.unchanged": "Tu as déjà voté ainsi pour cette réponse.",
    "feedback.not_an_answer": "Ce message n'est pas une réponse que je peux noter.",
    "solved.done": "C'est noté : la question est marquée résolue.",
    "solved.done_indexed": (
        "C'est noté : le fil est marqué résolu et rejoint les discussions résolues, "
        "pour aider les prochains qui poseront la même question."
    ),
    "solved.refused": (
        "Seuls l'auteur de la question et les modérateurs peuvent la marquer résolue."
    ),
    "solved.no_answer": (
        "Je n'ai pas de réponse ici à marquer : indique le message qui a résolu "
        "(son lien ou son id) avec `/solved message:`."
    ),
    "solved.not_in_forum": "`/solved` s'utilise dans un fil du forum d'entraide.",
    "solved.bad_message": (
        "Je ne trouve pas ce message dans ce fil. Donne le lien ou l'id d'un message d'ici."
    ),
    "summary.refused": "Seuls les modérateurs et les admins peuvent demander un résumé.",
    "summary.too_few_messages": "Il n'y a pas assez de messages à résumer ici.",
    "summary.title": "Résumé de #{channel} ({count} messages)",
    "cost_report.refused": "Seuls les admins peuvent consulter le rapport des coûts.",
    "cost_report.period.needs_from": (
        "Pour une période personnalisée, donne au moins la date « from » (AAAA-MM-JJ)."
    ),
    "cost_report.period.bad_dates": (
        "Je ne comprends pas ces dates : utilise le format AAAA-MM-JJ, avec « from » avant « to »."
    ),
    "cost_report.period.too_long": "Une période personnalisée couvre au plus {days} jours.",
    "cost_report.period.unknown": "Période inconnue : choisis today, 7d, 30d, month ou custom.",
    "cost_report.period_name.today": "aujourd'hui",
    "cost_report.period_name.7d": "7 derniers jours",
    "cost_report.period_name.30d": "30 derniers jours",
    "cost_report.period_name.month": "ce mois-ci",
    "cost_report.period_name.custom": "du {first} au {last}",
    "cost_report.title": "💰 Coûts de l'IA : {period}",
    "cost_report.range": (
        "Du {start} au {end} (UTC) ; période précédente : du {previous_start} au {previous_end}"
    ),
    "cost_report.calls": "Appels",
    "cost_report.tokens": "Tokens",
    "cost_report.cost": "Coût",
    "cost_report.change": "{delta} ({percent}) par rapport à la période précédente",
    "cost_report.change_from_zero": "{delta} (rien sur la période précédente)",
    "cost_report.top_title": "Top par {grouping}",
    "cost_report.top_line": (
        "{rank}. {name} : **{cost} USD** · appels : {calls} · tokens : {tokens}"
    ),
    "cost_report.more": "… et {count} autre(s)",
    "cost_report.top_feedback": (
        "↳ réponses : {answers} · utiles : {helpful} · résolues : {solved}"
        " · par fil résolu : {per_solved}"
    ),
    "cost_report.feedback": "Avis des membres",
    "cost_report.feedback_value": (
        "**{answers}** réponse(s) · utiles : **{helpful}** ({up} 👍 / {down} 👎)\n"
        "résolues : **{solved}** · coût par fil résolu : **{per_solved}**"
    ),
    "cost_report.feedback_none": "Aucune réponse avec les boutons 👍 / 👎 sur cette période.",
    "cost_report.no_calls": "Aucun appel sur cette période.",
    "cost_report.none_key": "(aucun)",
    "cost_report.unpriced": "{count} appel(s) sans prix connu : leur coût n'est pas compté.",
    "cost_report.daily_cap": "Plafond quotidien du serveur en vigueur : {cap} (ligne rouge)",
    "cost_report.daily_cap_none": "Plafond quotidien du serveur : aucun en fin de période",
    "cost_report.cap_changes": "Changé avec /budget : {changes}",
    "cost_report.cap_change": "le {day} ({before} → {after})",
    "cost_report.calls_note": "refusés et en échec compris",
    "cost_report.group.feature": "fonction",
    "cost_report.group.user": "membre",
    "cost_report.group.model": "modèle",
    "cost_report.group.channel": "salon",
    "cost_report.group.day": "jour",
    "cost_report.chart.title": "Dépenses par jour et par fonction",
    "cost_report.chart.x": "Jour (UTC)",
    "cost_report.chart.y": "Coût (USD)",
    "cost_report.chart.cap": "Plafond quotidien",
    "cost_report.chart.empty": "Aucune dépense sur cette période",
    "attachment.not_read": (
        "Je n'ai pas lu « {name} » : ce type de fichier n'est pas pris en charge."
    ),
    "attachment.too_big": (
        "Je n'ai pas lu « {name} » : il dépasse la taille maximale ({limit}).",
        "Je n'ai pas lu « {name} » : il est trop gros.",
    ),
    "attachment.bad_image": (
        "Je n'ai pas pu ouvrir l'image « {name} » : elle semble abîmée ou dans un format "
        "non pris en charge."
    ),
    "attachment.image_too_large": "L'image « {name} » est trop grande pour être analysée.",
    "attachment.truncated": "« {name} » était trop long : je n'en ai lu que le début.",
    "attachment.download_failed": "Je n'ai pas réussi à télécharger « {name} ».",
    "attachment.empty": "« {name} » est vide, je n'ai rien pu en lire.",
    # The last line of the offline demo (ibot/demo.py).
    "demo.next_steps": (
        "Et maintenant : pour lancer le vrai bot, mets BOT_TOKEN (le jeton de ton bot "
        "Discord) et OPENAI_API_KEY dans l'environnement ou dans .env (modèle : "
        ".env.example), puis relance `make run`. Détails : README, « Deploying for real »."
    ),
    "attachment.binary": (
        "Je n'ai pas lu « {name} » : il ressemble à un fichier binaire, pas à du texte."
    ),
}

_EN: dict[str, Entry] = {
    "cost_footer": "Total tokens: {tokens} | Cost: {cost} USD",
    "local_footer": "Answered by the local model",
    "answer_title": "Answer from {bot_name}",
    "error.rate_limit": "Too many requests right now, try again in a minute.",
    "error.insufficient_quota": (
        "The server's OpenAI credit is used up. The admins have been told; try again later."
    ),
    "error.server_error": "OpenAI is having trouble on its side. Try again in a few minutes.",
    "error.timeout": "OpenAI took too long to answer. Try again in a moment.",
    "error.connection": "OpenAI can't be reached right now. Try again in a moment.",
    "error.bad_request": (
        "I couldn't process your request as it is (too long, or an attachment was refused). "
        "Try shortening or rephrasing it."
    ),
    "error.auth": "The bot's OpenAI key was refused. Please tell an admin.",
    "error.budget": (
        "The {budget} budget is spent; it renews {reset}.",
        "The {budget} budget is spent for now.",
        "The AI budget is spent for now. Try again later.",
    ),
    "error.not_configured": (
        "AI is not configured here (no OpenAI key and no local model). Please tell an admin."
    ),
    "error.empty_question": "Your question is empty: write what you want to ask.",
    "error.cancelled": "The request was cancelled before it finished.",
    "error.interrupted": "The bot restarted during your request. Please ask again.",
    "error.other": "Something unexpected went wrong. Try again in a moment.",
    "error.generic": "Oops, something went wrong on my side. Try again in a moment.",
    "error.restarting": "I am restarting: ask again in a minute.",
    "resume.note": "🔄 The bot restarted during your request; here is your answer.",
    "forum.starter_missing": (
        "I couldn't read your post: Discord did not give it to me. I won't answer this "
        "thread; open a new one if you want an answer from me."
    ),
    "budget.guild_daily": "server's daily",
    "budget.guild_monthly": "server's monthly",
    "budget.user_daily": "per-member daily",
    "budget.feature_daily:auto_reply": "daily forum-reply",
    "budget.feature_daily:ask": "daily /ask-gpt",
    "budget.feature_daily:summary": "daily summary",
    "budget.feature_daily:chat": "daily chat",
    "budget.feature_daily:kb_embed": "daily knowledge-base indexing",
    "budget.fallback_footer": "Tight budget: a cheaper model than {requested}",
    "budget.refused": "Only admins can see and change the budgets.",
    "budget.invalid_amount": (
        "“{value}” is not a valid amount: give a number of dollars (0 or more), "
        "or “none” to remove the cap."
    ),
    "budget.no_cap": "no cap",
    "budget.cap": "{amount} USD",
    "budget.set_done": "Done: the {budget} budget is now {cap} (was {previous}).",
    "budget.show_title": "The server's AI budgets",
    "budget.show_line": (
        "**The {budget} budget**: {cap} — spent {spent} USD, held {reserved} USD; "
        "renews {reset}. {source}"
    ),
    "budget.show_user_line": (
        "**The {budget} budget**: {cap} — you today: {spent} USD; renews {reset}. {source}"
    ),
    "budget.source_config": "(from the config)",
    "budget.source_change": "(set by <@{user}> {when})",
    "budget.alert": (
        "⚠️ The {budget} budget has reached {percent}% ({spent} / {cap} USD). It renews {reset}."
    ),
    "budget.alert_spent": (
        "🛑 The {budget} budget is spent ({spent} / {cap} USD): requests go to the cheaper "
        "model or are refused until it renews {reset}."
    ),
    "budget.alert_member": (
        "🛑 <@{user}> reached their daily cap of {cap} USD ({spent} USD spent): their "
        "requests go to the cheaper model or are refused until it renews {reset}."
    ),
    "ask.refused_role": "Sorry, your role doesn't allow you to use /ask-gpt here.",
    "ask.cooldown": "Easy! You can ask another question in {seconds} s.",
    "ask.too_long": (
        "Your question is too long ({tokens} tokens, at most {limit}). "
        "Shorten it or split it into several questions."
    ),
    "knowledge.sources_heading": "Similar solved threads",
    "knowledge.already_solved": "✅ **Already solved here:** {link}",
    "similar.heading": "🔎 Solved threads similar to “{query}”:",
    "similar.line": "{number}. {link} — score {score}",
    "similar.none": (
        "No solved thread looks like your search. "
        "Try other keywords, or ask your question in the forum."
    ),
    "similar.off": "Searching solved threads is not enabled on this server.",
    "similar.bad_query": (
        "Your search has no word to look for. Type a few keywords, for example “pip install error”."
    ),
    "feedback.solved_button": "✅ Solved",
    "feedback.voted_up": "Thanks! Your 👍 is counted.",
    "feedback.voted_down": "Thanks, your 👎 is counted: it helps us improve the answers.",
    "feedback.unchanged": "You already voted this way on this answer.",
    "feedback.not_an_answer": "This message is not an answer I can rate.",
    "solved.done": "Noted: the question is marked solved.",
    "solved.done_indexed": (
        "Noted: the thread is marked solved and joins the solved threads, "
        "to help the next people who ask the same question."
    ),
    "solved.refused": "Only the person who asked and the moderators can mark it solved.",
    "solved.no_answer": (
        "I have no answer here to mark: point to the message that solved it "
        "(its link or id) with `/solved message:`."
    ),
    "solved.not_in_forum": "`/solved` is used in a thread of the help forum.",
    "solved.bad_message": (
        "I can't find that message in this thread. Give the link or id of a message here."
    ),
    "summary.refused": "Only moderators and admins can ask for a summary.",
    "summary.too_few_messages": "There aren't enough messages to summarize here.",
    "summary.title": "Summary of #{channel} ({count} messages)",
    "cost_report.refused": "Only admins can see the cost report.",
    "cost_report.period.needs_from": (
        "For a custom period, give at least the “from” date (YYYY-MM-DD)."
    ),
    "cost_report.period.bad_dates": (
        "I can't read these dates: use YYYY-MM-DD, with “from” before “to”."
    ),
    "cost_report.period.too_long": "A custom period covers at most {days} days.",
    "cost_report.period.unknown": "Unknown period: choose today, 7d, 30d, month or custom.",
    "cost_report.period_name.today": "today",
    "cost_report.period_name.7d": "last 7 days",
    "cost_report.period_name.30d": "last 30 days",
    "cost_report.period_name.month": "this month",
    "cost_report.period_name.custom": "{first} to {last}",
    "cost_report.title": "💰 AI costs: {period}",
    "cost_report.range": (
        "From {start} to {end} (UTC); previous period: {previous_start} to {previous_end}"
    ),
    "cost_report.calls": "Calls",
    "cost_report.tokens": "Tokens",
    "cost_report.cost": "Cost",
    "cost_report.change": "{delta} ({percent}) vs previous period",
    "cost_report.change_from_zero": "{delta} (nothing in the previous period)",
    "cost_report.top_title": "Top by {grouping}",
    "cost_report.top_line": "{rank}. {name}: **{cost} USD** · calls: {calls} · tokens: {tokens}",
    "cost_report.more": "… and {count} more",
    "cost_report.top_feedback": (
        "↳ answers: {answers} · helpful: {helpful} · solved: {solved}"
        " · per solved thread: {per_solved}"
    ),
    "cost_report.feedback": "Members' feedback",
    "cost_report.feedback_value": (
        "**{answers}** answer(s) · helpful: **{helpful}** ({up} 👍 / {down} 👎)\n"
        "solved: **{solved}** · cost per solved thread: **{per_solved}**"
    ),
    "cost_report.feedback_none": "No answers with the 👍 / 👎 buttons in this period.",
    "cost_report.no_calls": "No calls in this period.",
    "cost_report.none_key": "(none)",
    "cost_report.unpriced": "{count} call(s) with no known price: their cost is not counted.",
    "cost_report.daily_cap": "Server daily cap in force: {cap} (red line)",
    "cost_report.daily_cap_none": "Server daily cap: none at the end of the period",
    "cost_report.cap_changes": "Changed with /budget: {changes}",
    "cost_report.cap_change": "on {day} ({before} → {after})",
    "cost_report.calls_note": "refused and failed included",
    "cost_report.group.feature": "feature",
    "cost_report.group.user": "member",
    "cost_report.group.model": "model",
    "cost_report.group.channel": "channel",
    "cost_report.group.day": "day",
    "cost_report.chart.title": "Daily spend by feature",
    "cost_report.chart.x": "Day (UTC)",
    "cost_report.chart.y": "Cost (USD)",
    "cost_report.chart.cap": "Daily cap",
    "cost_report.chart.empty": "No spending in this period",
    "attachment.not_read": "I didn't read “{name}”: this file type isn't supported.",
    "attachment.too_big": (
        "I didn't read “{name}”: it is over the size limit ({limit}).",
        "I didn't read “{name}”: it is too big.",
    ),
    "attachment.bad_image": (
        "I couldn't open the image “{name}”: it looks damaged or its format isn't supported."
    ),
    "attachment.image_too_large": "The image “{name}” is too large to be analysed.",
    "attachment.truncated": "“{name}” was too long: I only read its beginning.",
    "attachment.download_failed": "I couldn't download “{name}”.",
    "attachment.empty": "“{name}” is empty, there was nothing to read.",
    "demo.next_steps": (
        "Next: to run the real bot, set BOT_TOKEN (your Discord bot's token) and "
        "OPENAI_API_KEY in the environment or in .env (template: .env.example), then "
        "`make run` again. Details: README, “Deploying for real”."
    ),
    "attachment.binary": "I didn't read “{name}”: it looks like a binary file, not text.",
}

CATALOGUE: dict[str, dict[str, Entry]] = {"fr": _FR, "en": _EN}

_FORMATTER = string.Formatter()


def available_languages() -> tuple[str, ...]:
    """The languages with a message catalogue (and shipped prompts), the default first."""
    return tuple(CATALOGUE)


def normalize_language(lang: str | None) -> str:
    """ "fr", "fr-FR", "EN_us" -> a catalogue language; anything else -> French."""
    if not lang:
        return DEFAULT_LANGUAGE
    base = lang.strip().lower().replace("_", "-").split("-")[0]
    return base if base in CATALOGUE else DEFAULT_LANGUAGE


def placeholders(template: str) -> set[str]:
    """The names between braces in a str.format template ("{a} {b!r}" -> {"a", "b"})."""
    return {name for _, name, _, _ in _FORMATTER.parse(template) if name}


def _entry(key: str, lang: str) -> Entry:
    for language in (normalize_language(lang), DEFAULT_LANGUAGE):
        entry = CATALOGUE[language].get(key)
        if entry is not None:
            return entry
    raise KeyError(f"no message {key!r} in any language")


def _choose(entry: Entry, params: Mapping[str, Any]) -> str:
    if isinstance(entry, str):
        return entry
    for variant in entry[:-1]:
        if all(params.get(name) not in (None, "") for name in placeholders(variant)):
            return variant
    return entry[-1]


def t(key: str, lang: str = DEFAULT_LANGUAGE, **params: Any) -> str:
    """The message `key` in `lang` (French when missing there), filled with `params`.

    Extra params are ignored, so callers can pass the same set to a family of messages
    (every error.* gets budget= and reset=); a placeholder with no param is a KeyError.
    """
    return _choose(_entry(key, lang), params).format(**params)


# ---- prompts -----------------------------------------------------------------------------

_COMMON = frozenset({"date", "bot_name"})  # PromptBuilder fills these in every template

# key -> (placeholders it must contain, placeholders it may contain besides _COMMON)
PROMPT_KEYS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "persona": (frozenset(), frozenset()),
    "auto_reply": (
        frozenset({"content"}),
        frozenset({"author", "title", "tags", "content"}),
    ),
    "ask": (frozenset({"question"}), frozenset({"author", "question"})),
    "summary": (frozenset({"transcript"}), frozenset({"channel", "transcript"})),
    "summary_chunk": (frozenset({"transcript"}), frozenset({"channel", "transcript"})),
    "summary_combine": (frozenset({"transcript"}), frozenset({"channel", "transcript"})),
    "chat": (frozenset(), frozenset()),
    "sources": (frozenset({"sources"}), frozenset({"sources"})),
    "duplicate": (frozenset({"sources"}), frozenset({"sources"})),
    "local_sources": (frozenset(), frozenset()),
}


class PromptsError(ValueError):
    """A prompts file is missing, unreadable, or lacks a template the services need."""


def _check_template(key: str, template: object, where: Path) -> str:
    if not isinstance(template, str) or not template.strip():
        raise PromptsError(f"{where}: {key!r} must be a non-empty string")
    template = template.strip()
    try:
        used = placeholders(template)
    except ValueError as err:  # a lone { or }
        raise PromptsError(f"{where}: {key!r}: {err} (write {{{{ and }}}} for braces)") from None
    required, allowed = PROMPT_KEYS[key]
    if missing := required - used:
        raise PromptsError(f"{where}: {key!r} must contain {{{', '.join(sorted(missing))}}}")
    if unknown := used - allowed - _COMMON:
        known = ", ".join("{" + n + "}" for n in sorted(allowed | _COMMON))
        raise PromptsError(
            f"{where}: {key!r} uses {{{', '.join(sorted(unknown))}}}, which is never filled "
            f"in; it may use {known}"
        )
    return template


def load_prompts(lang: str, directory: str | Path | None = None) -> dict[str, str]:
    """The persona and templates of `lang` from `directory`/<lang>.toml, checked.

    `directory` defaults to the prompts shipped with iBot (config/prompts/). Keys other
    than the known templates are kept, so a file may carry templates for later features.
    """
    folder = Path(directory) if directory is not None else PROMPTS_DIR
    path = folder / f"{normalize_language(lang)}.toml"
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except FileNotFoundError:
        raise PromptsError(f"{path}: prompts file not found") from None
    except tomllib.TOMLDecodeError as err:
        raise PromptsError(f"{path}: invalid TOML: {err}") from None
    prompts: dict[str, str] = {}
    for key in PROMPT_KEYS:
        if key not in data:
            raise PromptsError(f"{path}: missing {key!r}")
        prompts[key] = _check_template(key, data[key], path)
    for key, value in data.items():
        if key not in prompts and isinstance(value, str):
            prompts[key] = value.strip()
    return prompts
