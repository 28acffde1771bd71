package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// The output formats of -o.
const (
	formatTable = "table"
	formatJSON  = "json"
)

// outputFormats lists the formats for -o's help and completion.
var outputFormats = []string{formatTable, formatJSON}

// validateOutput checks an -o value.
func validateOutput(format string) error {
	for _, f := range outputFormats {
		if format == f {
			return nil
		}
	}
	return usageError{fmt.Errorf("-o %q: want %s", format, strings.Join(outputFormats, " or "))}
}

// completeOutputFormats completes -o.
func completeOutputFormats(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return []string{
		formatTable + "\tcolumns for people",
		formatJSON + "\tan object for programs",
	}, cobra.ShellCompDirectiveNoFileComp
}

// result is what a command prints. Its JSON form (encoding/json, so the
// field tags are the contract for scripts) is printed for -o json;
// writeTable prints it for people.
type result interface {
	writeTable(w io.Writer) error
}

// printer prints results in one output format.
type printer interface {
	print(r result) error
}

// newPrinter returns the printer of format (already validated) writing
// to w.
func newPrinter(format string, w io.Writer) printer {
	if format == formatJSON {
		return jsonPrinter{w}
	}
	return tablePrinter{w}
}

// tablePrinter prints results as their text for people.
type tablePrinter struct{ w io.Writer }

func (p tablePrinter) print(r result) error {
	if err := r.writeTable(p.w); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// jsonPrinter prints results as indented JSON, one value per command.
type jsonPrinter struct{ w io.Writer }

func (p jsonPrinter) print(r result) error {
	enc := json.NewEncoder(p.w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// table writes aligned columns, after a header row when one is given.
type table struct {
	tw *tabwriter.Writer
}

func newTable(w io.Writer, header ...string) *table {
	t := &table{tw: tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)}
	if len(header) > 0 {
		t.row(header...)
	}
	return t
}

func (t *table) row(cells ...string) {
	fmt.Fprintln(t.tw, strings.Join(cells, "\t"))
}

func (t *table) flush() error { return t.tw.Flush() }

// formatTime formats a time for a table: UTC, to the second; "-" when
// unknown.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// formatAge formats how long before now t was, as "12s ago"; "-" when
// unknown.
func formatAge(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return strconv.Itoa(int(d/time.Second)) + "s ago"
	case d < time.Hour:
		return strconv.Itoa(int(d/time.Minute)) + "m ago"
	case d < 48*time.Hour:
		return strconv.Itoa(int(d/time.Hour)) + "h ago"
	}
	return strconv.Itoa(int(d/(24*time.Hour))) + "d ago"
}

// orDash returns s, or "-" when it is empty, for table cells.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// yesNo formats a boolean for a table.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
