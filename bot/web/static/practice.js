// The practice page: Enter sends (Shift+Enter starts a new line); while the customer
// answers, the button is disabled and "typing…" shows, so a reply is not sent twice.
"use strict";
const compose = document.querySelector("form.compose");
if (compose) {
  const box = compose.querySelector("textarea");
  const button = compose.querySelector("button");
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (box.value.trim()) compose.requestSubmit();
    }
  });
  compose.addEventListener("submit", () => {
    button.disabled = true;
    document.querySelector(".typing").hidden = false;
  });
  box.focus();
  window.scrollTo(0, document.body.scrollHeight);
}
