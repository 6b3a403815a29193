package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// table is the benchmark's one output: numbered rows of a measurement, its
// target and PASS or MISS (— when the row is reported without a target),
// then each row's details by number, then notes.
type table struct {
	header []string
	rows   []row
	notes  []string
}

type row struct {
	name, measured, target, verdict, detail string
}

// add appends a row; pass is nil for a row without a target.
func (t *table) add(name, measured, target string, pass *bool, detail string) {
	v := "—"
	if pass != nil {
		v = "MISS"
		if *pass {
			v = "PASS"
		}
	}
	t.rows = append(t.rows, row{name, measured, target, v, detail})
}

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func (t *table) missed() int {
	n := 0
	for _, r := range t.rows {
		if r.verdict == "MISS" {
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
	pass := 0
	for _, r := range t.rows {
		if r.verdict == "PASS" {
			pass++
		}
	}
	fmt.Fprintf(out, "\n%d targets met, %d missed\n", pass, t.missed())
	fmt.Fprintln(out, "\ndetails:")
	for i, r := range t.rows {
		if r.detail != "" {
			fmt.Fprintf(out, "%3d  %s\n", i+1, r.detail)
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
