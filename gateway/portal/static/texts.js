// What the page says as it goes, in French (the default) and English. The static parts
// of the page come translated from the server; these are the messages the script shows.

const fr = {
  opening: "Ouverture du message…",
  decrypting: "Déchiffrement du message…",
  incomplete: "Ce lien est incomplet : la fin de l'adresse (après le signe #) manque. " +
    "Ouvrez à nouveau le lien depuis l'e-mail reçu, en entier. Si vous venez de recharger " +
    "la page, c'est normal : la clé est effacée de la barre d'adresse par sécurité.",
  unavailable: "Ce lien n'est plus valable. Il a peut-être expiré, été utilisé autant de " +
    "fois que prévu, ou été désactivé.",
  damagedMessage: "Le message n'a pas pu être déchiffré : le lien est peut-être incomplet " +
    "ou le contenu a été endommagé.",
  network: "La connexion au serveur a échoué. Vérifiez votre connexion Internet, puis " +
    "réessayez.",
  unexpected: "Une erreur inattendue est survenue. Rechargez la page depuis le lien de " +
    "l'e-mail.",
  oldBrowser: "Votre navigateur est trop ancien pour déchiffrer ce message. Ouvrez le " +
    "lien dans un navigateur récent (Firefox, Chrome, Edge ou Safari à jour).",
  codeEmpty: "Saisissez le code d'accès.",
  codeChecking: "Vérification du code…",
  codeWrong: (n) => `Code incorrect. Il vous reste ${n} essai${n > 1 ? "s" : ""}.`,
  codeLocked: "Code incorrect. Trop d'essais : ce lien est maintenant bloqué. " +
    "Contactez le cabinet pour recevoir à nouveau le message.",
  throttled: (minutes) => `Trop d'essais depuis votre connexion. Réessayez dans ${minutes} ` +
    `minute${minutes > 1 ? "s" : ""}.`,
  codeExpired: "Pour continuer, saisissez à nouveau le code d'accès.",
  noText: "(Ce message ne contient pas de texte.)",
  noDocuments: "Aucun document joint.",
  noSubject: "(Sans objet)",
  download: "Télécharger",
  downloadNamed: (name) => `Télécharger ${name}`,
  downloading: (percent) => `Déchiffrement… ${percent} %`,
  downloaded: "Enregistré dans vos téléchargements.",
  damagedFile: "Ce document est endommagé ou incomplet : rien n'a été enregistré. " +
    "Réessayez, ou contactez le cabinet.",
  interrupted: "Le téléchargement a été interrompu : rien n'a été enregistré. Vérifiez " +
    "votre connexion, puis réessayez (cela comptera un nouveau téléchargement).",
  usedUp: "Ce document a déjà été téléchargé autant de fois que prévu.",
  // The same words as the notice's (gateway/defaults/templates/fr/default/notice.txt).
  limits: (date, n) => `Ce lien est valable jusqu'au ${date}, et chaque document peut ` +
    `être téléchargé ${n} fois au plus.`,
  left: (n) => (n > 1 ? `Encore ${n} téléchargements possibles.` :
    n === 1 ? "Encore 1 téléchargement possible." : "Plus aucun téléchargement possible."),
  bytes: (n) => `${n} octet${n > 1 ? "s" : ""}`,
  units: ["ko", "Mo", "Go"],
  types: { pdf: "Document PDF", image: "Image", text: "Texte", other: "Fichier" },
  locale: "fr-FR",
  replyTo: (to) => `Votre réponse sera envoyée à ${to} seulement, chiffrée dans votre ` +
    "navigateur : elle ne voyage pas par e-mail.",
  replyLimits: (files, bytes) => `Jusqu'à ${files} document${files > 1 ? "s" : ""}, ` +
    `${Math.floor(bytes / 1048576)} Mo en tout.`,
  replySubject: (subject) => `Réponse : ${subject}`,
  replyEmpty: "Écrivez un message ou joignez un document.",
  replyTooMany: (n) => `Pas plus de ${n} document${n > 1 ? "s" : ""}, s'il vous plaît.`,
  replyTooBig: (bytes) => `Les documents dépassent ${Math.floor(bytes / 1048576)} Mo en ` +
    "tout : retirez-en un, ou envoyez-les en plusieurs fois.",
  replyTooLong: (n) => `Le message dépasse ${n} caractères.`,
  replySending: "Chiffrement et envoi de votre réponse…",
  replySent: (to) => `Votre réponse a été envoyée à ${to}.`,
  replyThrottled: "Trop de réponses en peu de temps. Réessayez dans une heure.",
  replyFailed: "La réponse n'a pas pu être envoyée. Réessayez plus tard, ou contactez " +
    "le cabinet.",
  fromPatient: "Réponse",
};

const en = {
  opening: "Opening the message…",
  decrypting: "Decrypting the message…",
  incomplete: "This link is incomplete: the end of the address (after the # sign) is " +
    "missing. Open the link from the email again, in full. If you just reloaded the page, " +
    "this is expected: the key is removed from the address bar for your safety.",
  unavailable: "This link is no longer valid. It may have expired, been used as many " +
    "times as allowed, or been switched off.",
  damagedMessage: "The message could not be decrypted: the link may be incomplete or the " +
    "content damaged.",
  network: "Could not reach the server. Check your Internet connection and try again.",
  unexpected: "Something unexpected went wrong. Open the link from the email again.",
  oldBrowser: "Your browser is too old to decrypt this message. Open the link in a " +
    "current browser (an up-to-date Firefox, Chrome, Edge or Safari).",
  codeEmpty: "Please enter the access code.",
  codeChecking: "Checking the code…",
  codeWrong: (n) => `Wrong code. ${n} ${n > 1 ? "tries" : "try"} left.`,
  codeLocked: "Wrong code. Too many tries: this link is now locked. Please contact the " +
    "practice to receive the message again.",
  throttled: (minutes) => `Too many tries from your connection. Try again in ${minutes} ` +
    `minute${minutes > 1 ? "s" : ""}.`,
  codeExpired: "To go on, please enter the access code again.",
  noText: "(This message has no text.)",
  noDocuments: "No documents attached.",
  noSubject: "(No subject)",
  download: "Download",
  downloadNamed: (name) => `Download ${name}`,
  downloading: (percent) => `Decrypting… ${percent}%`,
  downloaded: "Saved to your downloads.",
  damagedFile: "This document is damaged or incomplete: nothing was saved. Try again, " +
    "or contact the practice.",
  interrupted: "The download was interrupted: nothing was saved. Check your connection " +
    "and try again (it will count as another download).",
  usedUp: "This document has already been downloaded as many times as allowed.",
  // The same words as the notice's (gateway/defaults/templates/en/default/notice.txt).
  limits: (date, n) => `This link is valid until ${date}, and downloads are limited to ` +
    `${n} per document.`,
  left: (n) => (n > 1 ? `${n} downloads left.` : n === 1 ? "1 download left." :
    "No downloads left."),
  bytes: (n) => `${n} byte${n > 1 ? "s" : ""}`,
  units: ["KB", "MB", "GB"],
  types: { pdf: "PDF document", image: "Image", text: "Text", other: "File" },
  locale: "en-GB",
  replyTo: (to) => `Your reply will be sent to ${to} only, encrypted in your browser: it ` +
    "does not travel by email.",
  replyLimits: (files, bytes) => `Up to ${files} document${files > 1 ? "s" : ""}, ` +
    `${Math.floor(bytes / 1048576)} MB in all.`,
  replySubject: (subject) => `Re: ${subject}`,
  replyEmpty: "Please write a message or attach a document.",
  replyTooMany: (n) => `No more than ${n} document${n > 1 ? "s" : ""}, please.`,
  replyTooBig: (bytes) => `The documents are over ${Math.floor(bytes / 1048576)} MB in ` +
    "all: take one out, or send them in several replies.",
  replyTooLong: (n) => `The message is over ${n} characters.`,
  replySending: "Encrypting and sending your reply…",
  replySent: (to) => `Your reply was sent to ${to}.`,
  replyThrottled: "Too many replies in a short time. Please try again in an hour.",
  replyFailed: "The reply could not be sent. Please try again later, or contact the " +
    "practice.",
  fromPatient: "Reply",
};

// The sender's page for a link (manage.js).
fr.manage = {
  incomplete: "Ce lien est incomplet : ouvrez-le à nouveau depuis votre reçu, en entier.",
  unavailable: "Ce lien n'est plus valable : le message a peut-être été supprimé après " +
    "son expiration.",
  status: { ok: "Valable", expired: "Expiré", revoked: "Révoqué", exhausted:
    "Téléchargements épuisés", locked: "Bloqué (trop de codes faux)" },
  notOpened: "Pas encore ouvert",
  downloads: (counts, limit) => counts.length
    ? counts.map((n, i) => `document ${i + 1} : ${n} sur ${limit}`).join(" ; ")
    : "aucun document",
  notices: (events) => events.length
    ? `Vous recevez un avis : ${events.map((e) => fr.manage.events[e]).join(", ")}.`
    : "Vous ne recevez pas d'avis pour ce lien.",
  events: { opened: "à l'ouverture", downloaded: "à chaque téléchargement",
    expired: "à l'expiration sans ouverture" },
  extendHelp: (days, downloads) => `Au plus ${days} jour${days > 1 ? "s" : ""} de plus et ` +
    `${downloads} téléchargement${downloads > 1 ? "s" : ""} de plus par document, comme le ` +
    "permet la politique du cabinet.",
  nothingToExtend: "La politique du cabinet ne permet pas de prolonger davantage ce lien.",
  extended: "C'est fait : le lien a été prolongé.",
  revoked: "C'est fait : le lien est révoqué. Le destinataire voit maintenant que le lien " +
    "n'est plus valable.",
  badNumber: "Saisissez des nombres entiers, 0 ou plus.",
  network: fr.network,
  unexpected: fr.unexpected,
  throttled: "Trop d'essais depuis votre connexion. Réessayez plus tard.",
};

en.manage = {
  incomplete: "This link is incomplete: open it again from your receipt, in full.",
  unavailable: "This link is no longer valid: the message may have been deleted after it " +
    "expired.",
  status: { ok: "Valid", expired: "Expired", revoked: "Revoked", exhausted:
    "Downloads used up", locked: "Locked (too many wrong codes)" },
  notOpened: "Not opened yet",
  downloads: (counts, limit) => counts.length
    ? counts.map((n, i) => `document ${i + 1}: ${n} of ${limit}`).join("; ")
    : "no documents",
  notices: (events) => events.length
    ? `You get a notice ${events.map((e) => en.manage.events[e]).join(", ")}.`
    : "You get no notices for this link.",
  events: { opened: "when it is opened", downloaded: "at each download",
    expired: "if it expires unopened" },
  extendHelp: (days, downloads) => `At most ${days} more day${days > 1 ? "s" : ""} and ` +
    `${downloads} more download${downloads > 1 ? "s" : ""} per document, as the practice's ` +
    "policy allows.",
  nothingToExtend: "The practice's policy allows this link no further extension.",
  extended: "Done: the link was extended.",
  revoked: "Done: the link is revoked. The recipient now sees that the link is no longer " +
    "valid.",
  badNumber: "Please enter whole numbers, 0 or more.",
  network: en.network,
  unexpected: en.unexpected,
  throttled: "Too many tries from your connection. Please try again later.",
};

export const texts = { fr, en };
