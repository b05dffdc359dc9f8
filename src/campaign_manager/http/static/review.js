// The campaign review page. It reads the JSON API of the same server, builds the page with DOM calls (never from
// HTML strings: symbols and reasons are data), and reads again what it shows whenever GET /api/v1/changes says a
// campaign changed. Two views, chosen by the URL's fragment: the list (#/?symbol=&status=&portfolio_id=&offset=)
// and one campaign (#/campaigns/<human id or UUID>).
"use strict";

const API = "/api/v1";
const POLL_MS = 1500; // how often the changes cursor is asked for; the views are read again only when it moves
const PAGE_SIZE = 25; // campaigns per page of the list
const STRIP_SIZE = 8; // portfolios in the heat strip
const EVENTS_PAGE = 100; // timeline events read per request (the API's maximum)
const STATUSES = ["ACTIVE", "MARKUP", "COMPLETED", "INVALIDATED"];
const EVENT_TYPES = [
  "CampaignCreated",
  "PositionAdded",
  "CampaignStatusChanged",
  "SignalRejected",
  "PositionFilled",
  "PositionClosed",
  "PositionEventRejected",
  "CampaignCompleted",
  "CampaignInvalidated",
  "CampaignMarkedToMarket",
];
const MARKED = "CampaignMarkedToMarket"; // one every few seconds while prices flow: hidden unless asked for
// The service's limits; replaced by what the API says as soon as a portfolio summary arrives.
const limits = { allocation: "5", heat: "10" };

// --- DOM -------------------------------------------------------------------------------------------------------

const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, attributes, children) {
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  append(element, children);
  return element;
}

function h(tag, attributes, ...children) {
  return build(document.createElement(tag), attributes, children);
}

function s(tag, attributes, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attributes, children);
}

function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Replaces a container's content; the element that had the focus in it (known by its data-key) gets it back, so a
// live update never throws a keyboard user out of the table.
function fill(container, ...children) {
  const active = document.activeElement;
  const key = active && container.contains(active) ? active.dataset.key : undefined;
  container.replaceChildren();
  append(container, children);
  if (key) {
    const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (again) again.focus({ preventScroll: true });
  }
}

// --- numbers: decimals arrive as strings and are formatted as strings, never through floating point ----------

function parts(text) {
  const negative = text.startsWith("-");
  const [whole, fraction = ""] = (negative ? text.slice(1) : text).split(".");
  return { negative, whole: whole || "0", fraction };
}

// Half away from zero, to `places` decimals; grouped thousands.
function decimal(text, places) {
  const { negative, whole, fraction } = parts(String(text));
  const kept = BigInt(whole + fraction.padEnd(places + 1, "0").slice(0, places + 1));
  const scaled = kept / 10n + (kept % 10n >= 5n ? 1n : 0n);
  const digits = scaled.toString().padStart(places + 1, "0");
  const integer = digits.slice(0, digits.length - places).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  const result = places ? `${integer}.${digits.slice(digits.length - places)}` : integer;
  return negative && scaled !== 0n ? `−${result}` : result;
}

// The decimals a value needs, between `least` and `most`.
function needed(text, least, most) {
  const used = parts(String(text)).fraction.replace(/0+$/, "").length;
  return Math.min(Math.max(used, least), most);
}

const dash = "—";
const money = (v) => (v === null || v === undefined ? dash : decimal(v, 2));
const pnl = (v) => (v === null || v === undefined ? dash : (Number(v) > 0 ? "+" : "") + decimal(v, 2));
const price = (v) => (v === null || v === undefined ? dash : decimal(v, needed(v, 2, Math.abs(Number(v)) < 1 ? 8 : 4)));
const quantity = (v) => (v === null || v === undefined ? dash : decimal(v, needed(v, 0, 8)));
const percent = (v) => `${decimal(v, 2)}%`;
const limit = (v) => `${decimal(v, needed(v, 0, 4))}%`;
const ratio = (value, whole) => Math.max(0, Math.min(1, Number(value) / Number(whole) || 0));

// UTC, as the API gives it ("2024-10-15T14:30:00Z" or with a fraction): sliced, never converted.
const when = (iso) => (iso ? `${iso.slice(0, 10)} ${iso.slice(11, 19)} UTC` : dash);
const time = (iso) => h("time", { datetime: iso }, when(iso));
const pattern = (p) => ({ SPRING: "Spring", SOS: "SOS", LPS: "LPS" })[p] || p;

function badge(status) {
  return h("span", { class: `status status-${status.toLowerCase()}` }, status);
}

// A bar for the eye, hidden from assistive technology, and the same figure as text beside it.
function meter(value, whole, text, label) {
  const share = ratio(value, whole);
  const bar = h("span", { class: "bar-fill" });
  bar.style.width = `${(share * 100).toFixed(1)}%`;
  return h(
    "span",
    { class: share >= 0.9 ? "meter near" : "meter", "data-label": label },
    h("span", { class: "bar", "aria-hidden": "true" }, bar),
    h("span", { class: "meter-text" }, text),
  );
}

function allocationMeter(allocation) {
  return meter(allocation, limits.allocation, `${percent(allocation)} of ${limit(limits.allocation)}`, "allocation");
}

// --- the API ---------------------------------------------------------------------------------------------------

class NotFound extends Error {}

async function getJSON(path) {
  const response = await fetch(API + path, { headers: { Accept: "application/json" } });
  if (response.status === 404) throw new NotFound((await response.json()).detail);
  if (!response.ok) throw new Error(`${path} answered HTTP ${response.status}`);
  return response.json();
}

const query = (values) => {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) {
    for (const item of [value].flat()) if (item !== "" && item !== null && item !== undefined) params.append(name, item);
  }
  return params.toString();
};

function learnLimits(portfolio) {
  limits.allocation = portfolio.campaign_allocation_limit_percent;
  limits.heat = portfolio.heat_limit_percent;
}

// --- portfolio heat --------------------------------------------------------------------------------------------

function portfolioCard(p) {
  const name = h("a", { href: `#/?${query({ portfolio_id: p.portfolio_id })}`, "data-key": `portfolio:${p.portfolio_id}` }, p.portfolio_id);
  const heat =
    p.heat_percent === null
      ? h("p", { class: "figure" }, "No open campaign: no risk open")
      : h("p", { class: "figure" }, `${money(p.open_risk)} of ${money(p.max_open_risk)} open risk`);
  return h(
    "li",
    { class: "portfolio" },
    h("h3", {}, name),
    meter(p.heat_percent ?? "0", p.heat_limit_percent, `Heat ${percent(p.heat_percent ?? "0")} of ${limit(p.heat_limit_percent)}`, "heat"),
    heat,
    h(
      "p",
      { class: "meta" },
      `${p.open_campaign_count} open ${p.open_campaign_count === 1 ? "campaign" : "campaigns"} · ${percent(p.open_allocation_percent)} allocated`,
    ),
  );
}

// --- the list of campaigns ------------------------------------------------------------------------------------

function listParams(params) {
  const offset = Number.parseInt(params.get("offset") || "0", 10);
  return {
    symbol: (params.get("symbol") || "").trim(),
    status: STATUSES.includes(params.get("status")) ? params.get("status") : "",
    portfolio_id: (params.get("portfolio_id") || "").trim(),
    offset: Number.isFinite(offset) && offset > 0 ? offset : 0,
  };
}

function listView(params) {
  let state = listParams(params);
  const strip = h("div", { class: "strip-body" }, h("p", {}, "Loading…"));
  const table = h("div", { class: "table-wrap" }, h("p", {}, "Loading…"));
  const pager = h("nav", { class: "pager", "aria-label": "Campaign pages" });
  const input = (id, name, label, extra) =>
    h("div", { class: "field" }, h("label", { for: id }, label), h("input", { id, name, type: "text", autocomplete: "off", spellcheck: "false", ...extra }));
  const status = h(
    "select",
    { id: "filter-status", name: "status" },
    h("option", { value: "" }, "Any status"),
    STATUSES.map((s_) => h("option", { value: s_ }, s_)),
  );
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter campaigns" },
    input("filter-symbol", "symbol", "Symbol", { maxlength: 20, placeholder: "e.g. AAPL" }),
    h("div", { class: "field" }, h("label", { for: "filter-status" }, "Status"), status),
    input("filter-portfolio", "portfolio_id", "Portfolio", { maxlength: 64 }),
    h(
      "div",
      { class: "actions" },
      h("button", { type: "submit" }, "Apply filters"),
      h("button", { type: "button", class: "secondary", onclick: () => go({}) }, "Clear filters"),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = new FormData(form);
    go({ symbol: data.get("symbol").trim(), status: data.get("status"), portfolio_id: data.get("portfolio_id").trim() });
  });

  function go(values) {
    const next = `#/?${query({ ...values, offset: values.offset || "" })}`;
    if (location.hash === next) view.refresh();
    else location.hash = next;
  }

  function showFilters() {
    form.elements.symbol.value = state.symbol;
    form.elements.status.value = state.status;
    form.elements.portfolio_id.value = state.portfolio_id;
  }

  const root = h(
    "div",
    { class: "list-view" },
    h("h1", { tabindex: "-1" }, "Campaigns"),
    h(
      "section",
      { class: "heat-strip", "aria-labelledby": "heat-title" },
      h("h2", { id: "heat-title" }, "Portfolio heat"),
      h("p", { class: "hint" }, "Open risk of each portfolio's open campaigns against its heat limit, hottest first."),
      strip,
    ),
    h("section", { "aria-labelledby": "list-title" }, h("h2", { id: "list-title", class: "visually-hidden" }, "Campaign list"), form, table, pager),
  );
  showFilters();

  async function readPortfolios() {
    if (state.portfolio_id) {
      try {
        return { data: [await getJSON(`/portfolios/${encodeURIComponent(state.portfolio_id)}`)], total: 1 };
      } catch (error) {
        if (error instanceof NotFound) return { data: [], total: 0 };
        throw error;
      }
    }
    const page = await getJSON(`/portfolios?${query({ limit: STRIP_SIZE })}`);
    return { data: page.data, total: page.pagination.total_count };
  }

  function filtersText() {
    const named = [
      state.symbol && `symbol ${state.symbol}`,
      state.status && `status ${state.status}`,
      state.portfolio_id && `portfolio ${state.portfolio_id}`,
    ].filter(Boolean);
    return named.length ? `, ${named.join(", ")}` : "";
  }

  function row(c) {
    return h(
      "tr",
      {},
      h(
        "th",
        { scope: "row" },
        h("a", { href: `#/campaigns/${encodeURIComponent(c.campaign_id)}`, "data-key": `campaign:${c.id}` }, c.campaign_id),
        h("span", { class: "sub" }, `${c.portfolio_id} · ${c.symbol} ${c.timeframe}`),
      ),
      h("td", {}, badge(c.status)),
      h("td", {}, c.phase),
      h("td", {}, allocationMeter(c.total_allocation)),
      h("td", { class: "num" }, money(c.current_risk)),
      h("td", { class: "num" }, price(c.weighted_avg_entry)),
      h("td", { class: "num" }, pnl(c.realized_pnl)),
      h("td", { class: "num" }, pnl(c.unrealized_pnl)),
    );
  }

  function renderTable(page) {
    const { returned_count: count, total_count: total } = page.pagination;
    const first = count ? state.offset + 1 : 0;
    const caption = count
      ? `Campaigns ${first}–${state.offset + count} of ${total}${filtersText()}, newest first`
      : `No campaign${filtersText() ? ` matches${filtersText().replace(/^,/, "")}` : " yet"}`;
    const columns = ["Campaign", "Status", "Phase", `Allocation used of ${limit(limits.allocation)}`, "Current risk", "Weighted avg entry", "Realized P&L", "Unrealized P&L"];
    fill(
      table,
      h(
        "table",
        { class: "campaigns" },
        h("caption", {}, caption),
        h("thead", {}, h("tr", {}, columns.map((name, i) => h("th", { scope: "col", class: i >= 4 ? "num" : null }, name)))),
        h("tbody", {}, page.data.map(row)),
      ),
    );
    const pages = Math.max(1, Math.ceil(total / PAGE_SIZE));
    const current = Math.floor(state.offset / PAGE_SIZE) + 1;
    const move = (offset) => () => go({ ...state, offset });
    fill(
      pager,
      h("button", { type: "button", "data-key": "previous", disabled: state.offset === 0, onclick: move(Math.max(0, state.offset - PAGE_SIZE)) }, "Previous page"),
      h("span", {}, `Page ${current} of ${pages}`),
      h("button", { type: "button", "data-key": "next", disabled: !page.pagination.has_more, onclick: move(state.offset + PAGE_SIZE) }, "Next page"),
    );
  }

  function renderStrip(portfolios) {
    if (!portfolios.data.length) {
      fill(strip, h("p", {}, state.portfolio_id ? `No portfolio is named ${state.portfolio_id}.` : "No portfolio yet: no signal has arrived."));
      return;
    }
    const shown = portfolios.data.length;
    fill(
      strip,
      h("ul", { class: "portfolios" }, portfolios.data.map(portfolioCard)),
      state.portfolio_id ? null : h("p", { class: "hint" }, `${shown} of ${portfolios.total} ${portfolios.total === 1 ? "portfolio" : "portfolios"} shown.`),
    );
  }

  const view = {
    root,
    title: "Campaigns",
    kind: "list",
    update(params_) {
      state = listParams(params_);
      showFilters();
    },
    async refresh() {
      const [page, portfolios] = await Promise.all([
        getJSON(`/campaigns?${query({ symbol: state.symbol, status: state.status, portfolio_id: state.portfolio_id, limit: PAGE_SIZE, offset: state.offset })}`),
        readPortfolios(),
      ]);
      if (portfolios.data.length) learnLimits(portfolios.data[0]);
      renderStrip(portfolios);
      renderTable(page);
    },
  };
  return view;
}

// --- one campaign ----------------------------------------------------------------------------------------------

function fact(term, ...definition) {
  return h("div", {}, h("dt", {}, term), h("dd", {}, ...definition));
}

// Positions in the order they were opened: the order of their CampaignCreated and PositionAdded events (the API
// orders them by entry date, which a fill moves); any the events read so far do not name keep the API's order.
function inOrderOpened(positions, events) {
  const opened = new Map();
  for (const event of events) {
    const position = event.details && event.details.position;
    if (["CampaignCreated", "PositionAdded"].includes(event.event_type) && position && !opened.has(position.position_id)) {
      opened.set(position.position_id, opened.size);
    }
  }
  const rank = (p, i) => (opened.has(p.position_id) ? opened.get(p.position_id) : opened.size + i);
  return positions.map((p, i) => [rank(p, i), p]).sort((a, b) => a[0] - b[0]).map(([, p]) => p);
}

// Creek, Ice and Jump across the chart, each position's entry and stop in the order opened, the average entry.
function chart(c, positions) {
  const W = 640;
  const H = 280;
  const left = 112;
  const right = 120;
  const top = 18;
  const bottom = 44;
  const range = c.trading_range;
  const levels = range
    ? [
        { name: "Jump", value: range.jump, class: "level level-jump" },
        { name: "Ice", value: range.ice, class: "level level-ice" },
        { name: "Creek", value: range.creek, class: "level level-creek" },
      ]
    : [];
  const values = [...levels.map((l) => l.value), ...positions.flatMap((p) => [p.entry_price, p.stop_loss])].map(Number);
  if (!values.length) return null;
  let low = Math.min(...values);
  let high = Math.max(...values);
  const pad = (high - low || high * 0.02 || 1) * 0.08;
  low -= pad;
  high += pad;
  const y = (v) => top + ((high - Number(v)) / (high - low)) * (H - top - bottom);
  const plotWidth = W - left - right;
  const x = (i) => left + ((i + 0.5) * plotWidth) / Math.max(positions.length, 1);

  // Labels at the left edge, pushed apart so that close levels stay readable.
  const placed = levels.map((l) => ({ ...l, at: y(l.value) })).sort((a, b) => a.at - b.at);
  for (let i = 1; i < placed.length; i++) placed[i].label = Math.max(placed[i].at, (placed[i - 1].label ?? placed[i - 1].at) + 14);
  if (placed.length) placed[0].label = placed[0].at;

  const title = `Price levels of ${c.campaign_id}`;
  const described = [
    range ? `Creek ${price(range.creek)}, Ice ${price(range.ice)}, Jump ${price(range.jump)}.` : "No trading range stored.",
    ...positions.map((p) => `${pattern(p.pattern_type)}: entry ${price(p.entry_price)}, stop ${price(p.stop_loss)}.`),
    c.weighted_avg_entry ? `Weighted average entry ${price(c.weighted_avg_entry)}.` : "",
  ].join(" ");
  const svg = s(
    "svg",
    { class: "levels-chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title chart-desc" },
    s("title", { id: "chart-title" }, title),
    s("desc", { id: "chart-desc" }, described),
    range
      ? s("rect", { class: "range-zone", x: left, width: plotWidth, y: y(range.ice), height: Math.max(0, y(range.creek) - y(range.ice)) })
      : null,
    placed.map((l) => [
      s("line", { class: l.class, x1: left, x2: W - right, y1: l.at, y2: l.at }),
      s("text", { class: "level-label", x: left - 8, y: l.label + 4, "text-anchor": "end" }, `${l.name} ${price(l.value)}`),
    ]),
    c.weighted_avg_entry
      ? [
          s("line", { class: "average", x1: left, x2: W - right, y1: y(c.weighted_avg_entry), y2: y(c.weighted_avg_entry) }),
          s("text", { class: "level-label", x: W - right + 8, y: y(c.weighted_avg_entry) + 4 }, `Avg ${price(c.weighted_avg_entry)}`),
        ]
      : null,
    positions.map((p, i) => {
      const cx = x(i);
      const entry = y(p.entry_price);
      const stop = y(p.stop_loss);
      return s(
        "g",
        { class: `position position-${p.status.toLowerCase()}` },
        s("line", { class: "risk", x1: cx, x2: cx, y1: entry, y2: stop }),
        s("line", { class: "stop", x1: cx - 9, x2: cx + 9, y1: stop, y2: stop }),
        s("circle", { class: "entry", cx, cy: entry, r: 5.5 }),
        s("text", { class: "point-label", x: cx + 10, y: entry + 4 }, price(p.entry_price)),
        s("text", { class: "point-label muted", x: cx + 12, y: stop + 4 }, `stop ${price(p.stop_loss)}`),
        s("text", { class: "axis-label", x: cx, y: H - bottom + 20, "text-anchor": "middle" }, pattern(p.pattern_type)),
        s("text", { class: "axis-label muted", x: cx, y: H - bottom + 35, "text-anchor": "middle" }, p.status),
      );
    }),
  );
  return h(
    "figure",
    { class: "chart" },
    svg,
    h("figcaption", {}, "Trading range levels (lines) against each position's entry (dot) and stop (bar), in the order opened."),
  );
}

// What an event says, in words: a headline and, where there is one, the reason.
function describe(event) {
  const d = event.details || {};
  const p = d.position;
  const sized = (position) => `${quantity(position.entry_shares)} shares at ${price(position.entry_price)}, stop ${price(position.stop_loss)}`;
  switch (event.event_type) {
    case "CampaignCreated":
      return { headline: `Campaign created with a ${pattern(p.pattern_type)} position`, detail: sized(p) };
    case "PositionAdded":
      return { headline: `${pattern(p.pattern_type)} position added`, detail: sized(p) };
    case "CampaignStatusChanged":
      return { headline: `Status ${d.from_status} → ${d.to_status}`, reason: d.reason };
    case "SignalRejected":
      return { headline: `${pattern(d.pattern_type)} signal rejected`, reason: d.reason };
    case "PositionFilled":
      return {
        headline: `${pattern(p.pattern_type)} position filled`,
        detail: `${quantity(d.shares)} shares at ${price(d.fill_price)} (planned ${quantity(d.planned_shares)} at ${price(d.planned_price)})`,
      };
    case "PositionClosed":
      return {
        headline: `${pattern(p.pattern_type)} position ${d.fully_closed ? "closed" : "partly closed"}${d.stop_hit ? " at its stop" : ""}`,
        detail: `${quantity(d.shares_closed)} shares at ${price(d.exit_price)}, realized ${pnl(d.realized_pnl)}`,
      };
    case "PositionEventRejected":
      return { headline: `Position event ${d.event_type} rejected`, reason: d.reason };
    case "CampaignCompleted":
      return { headline: "Campaign completed", detail: `Realized ${pnl(d.realized_pnl)}, total ${pnl(d.total_pnl)}`, reason: d.reason };
    case "CampaignInvalidated":
      return {
        headline: "Campaign invalidated",
        detail: d.price ? `At ${price(d.price)}, unrealized ${pnl(d.unrealized_pnl)}` : null,
        reason: d.reason,
      };
    case "CampaignMarkedToMarket":
      return { headline: `Marked to market at ${price(d.price)}`, detail: `Unrealized ${pnl(d.unrealized_pnl)}, total ${pnl(d.total_pnl)}` };
    default:
      return { headline: event.event_type };
  }
}

function timelineItem(event) {
  const { headline, detail, reason } = describe(event);
  return h(
    "li",
    { class: `event event-${event.event_type}` },
    h("p", { class: "when" }, time(event.occurred_at), event.campaign_version ? ` · version ${event.campaign_version}` : ""),
    h("p", { class: "what" }, h("strong", {}, headline)),
    detail ? h("p", { class: "detail" }, detail) : null,
    reason ? h("p", { class: "reason" }, `Reason: ${reason}`) : null,
  );
}

const POSITION_COLUMNS = [
  "Position",
  "Status",
  "Entry date",
  "Entry",
  "Stop",
  "Target",
  "Shares held",
  "Allocation",
  "Risk",
  "Last price",
  "Unrealized P&L",
  "Realized P&L",
];

function positionRow(p) {
  return h(
    "tr",
    {},
    h("th", { scope: "row" }, pattern(p.pattern_type)),
    h("td", {}, badge(p.status)),
    h("td", {}, time(p.entry_date)),
    h("td", { class: "num" }, price(p.entry_price)),
    h("td", { class: "num" }, price(p.stop_loss)),
    h("td", { class: "num" }, price(p.target_price)),
    h("td", { class: "num" }, `${quantity(p.shares)} of ${quantity(p.entry_shares)}`),
    h("td", { class: "num" }, percent(p.allocation_percent)),
    h("td", { class: "num" }, money(p.risk_amount)),
    h("td", { class: "num" }, price(p.current_price)),
    h("td", { class: "num" }, pnl(p.current_pnl)),
    h("td", { class: "num" }, pnl(p.realized_pnl)),
  );
}

function campaignView(reference) {
  const path = `/campaigns/${encodeURIComponent(reference)}`;
  let eventsWanted = EVENTS_PAGE;
  let withMarks = false;
  const heading = h("h1", { tabindex: "-1" }, reference);
  const body = h("div", { class: "campaign-body" }, h("p", {}, "Loading…"));
  const root = h(
    "div",
    { class: "campaign-view" },
    h("nav", { "aria-label": "Breadcrumb", class: "breadcrumb" }, h("ol", {}, h("li", {}, h("a", { href: "#/" }, "Campaigns")), h("li", { "aria-current": "page" }, reference))),
    heading,
    body,
  );
  const marks = h("input", { type: "checkbox", id: "with-marks", "data-key": "with-marks" });
  marks.addEventListener("change", () => {
    withMarks = marks.checked;
    view.refresh();
  });

  async function readEvents() {
    const events = [];
    let total = 0;
    for (let offset = 0; offset < eventsWanted; offset += EVENTS_PAGE) {
      const page = await getJSON(`${path}/events?${query({ limit: EVENTS_PAGE, offset, event_type: withMarks ? [] : EVENT_TYPES.filter((t) => t !== MARKED) })}`);
      events.push(...page.data);
      total = page.pagination.total_count;
      if (!page.pagination.has_more) break;
    }
    return { events, total };
  }

  function render(c, history, portfolio) {
    view.title = c.campaign_id;
    document.title = `${c.campaign_id} · campaign-manager`;
    fill(heading, c.campaign_id, " ", badge(c.status));
    const range = c.trading_range;
    const positions = inOrderOpened(c.positions, history.events);
    const more = h(
      "button",
      { type: "button", "data-key": "more-events", onclick: () => ((eventsWanted += EVENTS_PAGE), view.refresh()) },
      "Show more events",
    );
    fill(
      body,
      h(
        "section",
        { class: "summary", "aria-labelledby": "summary-title" },
        h("h2", { id: "summary-title", class: "visually-hidden" }, "Summary"),
        h(
          "dl",
          { class: "facts" },
          fact("Status", c.status, c.invalidation_reason ? ` (${c.invalidation_reason})` : ""),
          fact("Phase", c.phase),
          fact("Symbol", `${c.symbol} ${c.timeframe}`),
          fact("Portfolio", h("a", { href: `#/?${query({ portfolio_id: c.portfolio_id })}` }, c.portfolio_id)),
          fact(`Allocation used of ${limit(limits.allocation)}`, allocationMeter(c.total_allocation)),
          fact("Current risk", money(c.current_risk)),
          fact("Weighted avg entry", price(c.weighted_avg_entry)),
          fact("Shares held", quantity(c.total_shares)),
          fact("Realized P&L", pnl(c.realized_pnl)),
          fact("Unrealized P&L", pnl(c.unrealized_pnl)),
          fact("Total P&L", pnl(c.total_pnl)),
          fact("Opened", time(c.start_date)),
          c.completed_at ? fact("Ended", time(c.completed_at)) : null,
          fact("Version", String(c.version)),
        ),
        portfolio
          ? h("div", { class: "heat-strip" }, h("h2", {}, "Portfolio heat"), h("ul", { class: "portfolios" }, portfolioCard(portfolio)))
          : null,
      ),
      h(
        "div",
        { class: "columns" },
        h(
          "section",
          { class: "column", "aria-labelledby": "chart-heading" },
          h("h2", { id: "chart-heading" }, "Trading range and entries"),
          range
            ? h("p", { class: "levels" }, `Creek ${price(range.creek)} · Ice ${price(range.ice)} · Jump ${price(range.jump)} · phase ${range.phase}`)
            : null,
          chart(c, positions),
        ),
        h(
          "section",
          { class: "column", "aria-labelledby": "timeline-heading" },
          h("h2", { id: "timeline-heading" }, "Timeline"),
          h("p", { class: "hint" }, `${history.total} ${history.total === 1 ? "event" : "events"}, oldest first${withMarks ? "" : ", marks to market left out"}.`),
          h("div", { class: "check" }, marks, h("label", { for: "with-marks" }, "Include mark-to-market events")),
          h("ol", { class: "timeline" }, history.events.map(timelineItem)),
          history.events.length < history.total ? more : null,
        ),
      ),
      h(
        "section",
        { "aria-labelledby": "positions-heading" },
        h("h2", { id: "positions-heading" }, "Positions"),
        h(
          "div",
          { class: "table-wrap" },
          h(
            "table",
            { class: "positions" },
            h("caption", {}, `${positions.length} ${positions.length === 1 ? "position" : "positions"}, in the order opened`),
            h("thead", {}, h("tr", {}, POSITION_COLUMNS.map((name, i) => h("th", { scope: "col", class: i >= 3 ? "num" : null }, name)))),
            h("tbody", {}, positions.map(positionRow)),
          ),
        ),
      ),
    );
  }

  const view = {
    root,
    title: reference,
    kind: "campaign",
    async refresh() {
      try {
        const c = await getJSON(path);
        const [history, portfolio] = await Promise.all([
          readEvents(),
          getJSON(`/portfolios/${encodeURIComponent(c.portfolio_id)}`).catch(() => null),
        ]);
        if (portfolio) learnLimits(portfolio);
        marks.checked = withMarks;
        render(c, history, portfolio);
      } catch (error) {
        if (!(error instanceof NotFound)) throw error;
        fill(heading, "Campaign not found");
        fill(body, h("p", {}, `No campaign has the id ${reference}. `, h("a", { href: "#/" }, "Back to the campaigns")));
      }
    },
  };
  return view;
}

// --- routing and live updates -----------------------------------------------------------------------------------

const live = document.getElementById("live");
const container = document.getElementById("view");
const LIVE = "Live: the page updates itself when campaigns change.";
let current = null;
let cursor = null;

function say(text) {
  if (live.textContent !== text) live.textContent = text;
}

let stale = false; // the last read of the view failed: read it again at the next poll

async function refresh(view) {
  try {
    await view.refresh();
    stale = false;
  } catch (error) {
    stale = true;
    say(`Could not read the API (${error.message}); retrying.`);
  }
  return !stale;
}

async function route() {
  const hash = location.hash || "#/";
  if (!hash.startsWith("#/")) return; // an in-page link such as the skip link: not a view
  const match = /^#\/campaigns\/(.+)$/.exec(hash);
  const params = new URLSearchParams(hash.split("?")[1] || "");
  if (!match && current && current.kind === "list") {
    // Filters and pages change the list in place: the focus stays where it was.
    current.update(params);
    await refresh(current);
    return;
  }
  const view = match ? campaignView(decodeURIComponent(match[1])) : listView(params);
  const first = current === null;
  current = view;
  container.replaceChildren(view.root);
  await refresh(view);
  if (current !== view) return;
  document.title = `${view.title} · campaign-manager`;
  if (!first) view.root.querySelector("h1").focus();
}

// Asks whether anything changed; reads the view again only when it did (or when the last read failed). The
// cursor is read before the data, so what is shown is never older than the cursor kept.
async function poll() {
  if (!document.hidden && current) {
    try {
      const { cursor: now } = await getJSON("/changes");
      if (now !== cursor || stale) {
        if (await refresh(current)) {
          say(now !== cursor ? `Updated ${when(new Date().toISOString())}` : LIVE);
          cursor = now;
        }
      }
    } catch {
      stale = true;
      say("Live updates paused: the API did not answer. Retrying.");
    }
  }
  setTimeout(poll, POLL_MS);
}

document.querySelector(".skip-link").addEventListener("click", (event) => {
  event.preventDefault(); // the fragment names views: move the focus without changing it
  document.getElementById("main").focus();
});
window.addEventListener("hashchange", route);
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && current) refresh(current);
});

(async () => {
  try {
    cursor = (await getJSON("/changes")).cursor;
  } catch {
    stale = true;
  }
  await route();
  if (!stale) say(LIVE);
  setTimeout(poll, POLL_MS);
})();
