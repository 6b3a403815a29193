package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// table is the benchmark's one output: numbered rows of a measurement, its
// target and whether it was met and by how much ("—" when the row is
// reported without a target), then each row's details by number, then
// sections (where the time went) and notes.
type table struct {
	header   []string
	rows     []row
	sections []section
	notes    []string
}

type row struct {
	name, measured, target, verdict, detail string
	missed                                  bool
}

type section struct {
	title string
	lines []string
}

// goal is a row's target: the measured value must be at most (or at
// least) limit; format prints a value or a difference in the row's unit.
type goal struct {
	atMost bool
	limit  float64
	format func(float64) string
}

func atMost(limit float64, format func(float64) string) goal {
	return goal{atMost: true, limit: limit, format: format}
}

func atLeast(limit float64, format func(float64) string) goal {
	return goal{limit: limit, format: format}
}

func (g goal) String() string {
	if g.atMost {
		return "≤ " + g.format(g.limit)
	}
	return "≥ " + g.format(g.limit)
}

// verdict says whether v meets the goal and by how much: the margin, or
// the shortfall in the row's unit and relative to the limit.
func (g goal) verdict(v float64) (text string, missed bool) {
	over := v - g.limit
	if !g.atMost {
		over = g.limit - v
	}
	if over <= 0 {
		if g.limit == 0 {
			return "met", false
		}
		return fmt.Sprintf("met, %s to spare", g.format(math.Abs(over))), false
	}
	if g.limit == 0 {
		return fmt.Sprintf("MISSED by %s", g.format(over)), true
	}
	return fmt.Sprintf("MISSED by %s (%.0f %%)", g.format(over), 100*over/math.Abs(g.limit)), true
}

// check appends a row with a target.
func (t *table) check(name string, v float64, measured string, g goal, detail string) {
	text, missed := g.verdict(v)
	t.rows = append(t.rows, row{name: name, measured: measured, target: g.String(), verdict: text, detail: detail, missed: missed})
}

// add appends a row with a verdict of its own: pass nil for a row without
// a target.
func (t *table) add(name, measured, target string, pass *bool, detail string) {
	v, missed := "—", false
	if pass != nil {
		v, missed = "MISSED", !*pass
		if *pass {
			v = "met"
		}
	}
	t.rows = append(t.rows, row{name: name, measured: measured, target: target, verdict: v, detail: detail, missed: missed})
}

// report appends a row without a target.
func (t *table) report(name, measured, detail string) { t.add(name, measured, "reported", nil, detail) }

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func (t *table) section(title string, lines ...string) {
	t.sections = append(t.sections, section{title, lines})
}

func (t *table) missed() int {
	n := 0
	for _, r := range t.rows {
		if r.missed {
			n++
		}
	}
	return n
}

func (t *table) met() int {
	n := 0
	for _, r := range t.rows {
		if strings.HasPrefix(r.verdict, "met") {
			n++
		}
	}
	return n
}

func (t *table) print(out io.Writer) {
	for _, h := range t.header {
		fmt.Fprintln(out, h)
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\trow\tmeasured\ttarget\tresult")
	for i, r := range t.rows {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i+1, r.name, r.measured, r.target, r.verdict)
	}
	tw.Flush()
	fmt.Fprintf(out, "\n%d targets met, %d missed\n", t.met(), t.missed())
	fmt.Fprintln(out, "\ndetails:")
	for i, r := range t.rows {
		if r.detail != "" {
			fmt.Fprintf(out, "%3d  %s\n", i+1, r.detail)
		}
	}
	for _, s := range t.sections {
		fmt.Fprintf(out, "\n%s\n", s.title)
		for _, l := range s.lines {
			fmt.Fprintf(out, "  %s\n", l)
		}
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(out, "\nnotes:")
		for _, n := range t.notes {
			fmt.Fprintf(out, "  - %s\n", n)
		}
	}
}

func ptr(b bool) *bool { return &b }

// ms formats a duration in milliseconds with three decimals.
func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

// msList formats durations as a list of whole milliseconds.
func msList(ds []time.Duration) string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond))
	}
	return strings.Join(s, ", ") + " ms"
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// Formats of goals' values.
func xFloor(v float64) string  { return fmt.Sprintf("%.2f × t_floor", v) }
func ofFloor(v float64) string { return fmt.Sprintf("%.2f of 1/t_floor", v) }
func mibF(v float64) string    { return fmt.Sprintf("%.1f MiB", v) }
func msF(v float64) string     { return fmt.Sprintf("%.0f ms", v) }
func countF(v float64) string  { return fmt.Sprintf("%.0f", v) }
