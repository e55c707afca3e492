// The drill workspace: the queue of customers (unread counts, how long each has waited)
// and the open conversation refresh every second and a half; a reply is sent without
// reloading the page, so what is being typed stays. Without scripts the page still works:
// the form posts and the page comes back.
"use strict";
const desk = document.querySelector(".desk");
if (desk) {
  const queue = desk.querySelector(".queue");
  const chat = desk.querySelector(".chat");
  const compose = desk.querySelector("form.compose");
  const left = document.querySelector(".left");
  const base = `/drills/${desk.dataset.drill}`;
  let label = desk.dataset.label;

  const refresh = async () => {
    let data;
    try {
      const answer = await fetch(`${base}/desk.json?c=${encodeURIComponent(label)}`, {
        headers: { Accept: "application/json" },
      });
      if (!answer.ok) return;
      data = await answer.json();
    } catch {
      return; // offline for a moment: the next refresh tries again
    }
    if (!data.running) {
      window.location.assign(base);
      return;
    }
    queue.innerHTML = data.queue; // rendered and escaped by the server's templates
    if (data.label !== label) {
      window.location.assign(`${base}/desk?c=${encodeURIComponent(data.label)}`);
      return;
    }
    const before = chat.querySelectorAll("[data-idx]").length;
    chat.innerHTML = data.chat;
    if (chat.querySelectorAll("[data-idx]").length !== before) chat.scrollTop = chat.scrollHeight;
    left.dataset.left = data.left;
  };

  if (compose) {
    const box = compose.querySelector("textarea");
    const problem = compose.querySelector(".problem");
    const ref = compose.querySelector("input[name=ref]");
    box.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        compose.requestSubmit();
      }
    });
    compose.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = new URLSearchParams(new FormData(compose));
      compose.querySelector("button").disabled = true;
      try {
        const answer = await fetch(compose.action, {
          method: "POST",
          headers: { Accept: "application/json" },
          body,
        });
        const data = await answer.json();
        problem.hidden = answer.ok;
        if (answer.ok) {
          box.value = "";
          ref.value = `${ref.value.split(".")[0]}.${Date.now()}`;
        } else {
          problem.textContent = data.error;
        }
      } catch {
        problem.hidden = false; // the same reference is sent again next time: answered once
        problem.textContent = "⚠";
      } finally {
        compose.querySelector("button").disabled = false;
      }
      await refresh();
    });
  }
  setInterval(refresh, 1500);
  setInterval(() => {
    const seconds = Math.max(0, Number(left.dataset.left) - 1);
    left.dataset.left = seconds;
    left.textContent = left.textContent.replace(/\d+:\d\d/, `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`);
  }, 1000);
}
