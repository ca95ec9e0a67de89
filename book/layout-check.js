// Metis book: with `?layout-check` in the URL, measures the page as laid out and writes a
// report into it (<pre id="metis-layout-report">) for the browser test of `just book-check`:
// each code block, table or SVG wider than its column, and each diagram node without a label.
// Without the parameter it does nothing.
(function () {
    "use strict";
    if (!/[?&]layout-check\b/.test(window.location.search)) {
        return;
    }
    function report() {
        var main = document.querySelector("main");
        if (!main) {
            return;
        }
        var column = main.clientWidth;
        var found = [];
        function describe(el) {
            var text = (el.textContent || "").trim().split("\n")[0];
            return el.tagName.toLowerCase() + " \"" + text.slice(0, 60) + "\"";
        }
        main.querySelectorAll("pre").forEach(function (pre) {
            if (pre.scrollWidth > pre.clientWidth + 1) {
                var longest = 0;
                (pre.textContent || "").split("\n").forEach(function (l) {
                    longest = Math.max(longest, l.length);
                });
                found.push("overflow " + describe(pre) + ": " + pre.scrollWidth + " px in " +
                    pre.clientWidth + " px (longest line " + longest + " characters)");
            }
        });
        main.querySelectorAll("table").forEach(function (t) {
            var box = t.parentElement && t.parentElement.classList.contains("table-wrapper")
                ? t.parentElement : t;
            if (t.getBoundingClientRect().width > column + 1 ||
                box.scrollWidth > box.clientWidth + 1) {
                found.push("overflow " + describe(t) + ": " +
                    Math.round(t.getBoundingClientRect().width) + " px in a " + column + " px column");
            }
        });
        main.querySelectorAll("svg").forEach(function (svg) {
            var w = svg.getBoundingClientRect().width;
            if (w > column + 1) {
                found.push("overflow svg \"" + (svg.getAttribute("aria-label") || "") + "\": " +
                    Math.round(w) + " px in a " + column + " px column");
            }
            svg.querySelectorAll("g").forEach(function (g) {
                var shape = g.querySelector(":scope > rect, :scope > ellipse, :scope > circle");
                if (!shape) {
                    return;
                }
                var label = g.querySelector(":scope > text, :scope > title");
                if (!label || !(label.textContent || "").trim()) {
                    found.push("unlabelled node in svg \"" + (svg.getAttribute("aria-label") || "") + "\"");
                }
            });
        });
        var out = document.createElement("pre");
        out.id = "metis-layout-report";
        out.setAttribute("data-column", String(column));
        out.textContent = found.join("\n");
        document.body.appendChild(out);
    }
    if (document.readyState === "complete") {
        report();
    } else {
        window.addEventListener("load", report);
    }
})();
