// The sign-in page: show the server's error (a code) in the chosen language.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const code = document.body.dataset.error;
  const show = () => {
    document.getElementById("error").textContent = code ? VC.t(code) : "";
  };
  show();
  VC.onLang(show);
});
