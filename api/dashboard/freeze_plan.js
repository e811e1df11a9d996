// The freeze plan drawn as the network's layers, head on top: frozen, trainable, or new, each with its rate.

import { count, h } from "./dom.js";

const STATE_TEXT = {
  frozen: "frozen",
  trainable: "trainable",
  partly_trainable: "partly trainable",
  new: "new (task head)",
};

export function freezePlanCard(plan) {
  const heading = h("h2", { id: "plan-heading" }, plan ? `What trains in epoch ${plan.epoch}` : "What trains");
  if (!plan) {
    return [heading, h("p", { class: "empty" }, "Drawn once training starts: the model's layers, which are frozen, which train, and at what learning rate.")];
  }
  const units = [...plan.units].reverse(); // the head on top, as the network is drawn bottom-up
  const list = h(
    "ol",
    { class: "plan", reversed: true, "aria-label": "The model's layers, from the head down to the embeddings" },
    units.map((unit) =>
      h(
        "li",
        { "data-unit": unit.name, "data-state": unit.state },
        h("span", { class: "unit-name" }, unit.name),
        h(
          "span",
          { class: `unit ${unit.state}` },
          h("span", {}, STATE_TEXT[unit.state] || unit.state),
          h("span", {}, unit.learning_rate ? `lr ${unit.learning_rate.toExponential(1)}` : ""),
          h("span", {}, `${count(unit.parameters)} params`),
        ),
      ),
    ),
  );
  const legend = h(
    "ul",
    { class: "legend plan-legend" },
    ["frozen", "trainable", "new"].map((state) => h("li", {}, h("span", { class: `unit ${state}`, "aria-hidden": "true" }), STATE_TEXT[state])),
  );
  return [heading, list, legend];
}
