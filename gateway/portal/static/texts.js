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
};

export const texts = { fr, en };
