package main

import (
	"io"

	"github.com/spf13/cobra"
)

func newDemoCommand(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "demo",
		Short: "Start a local demo cluster and the proxy on 127.0.0.1:6432",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDemo(cmd.Context(), demoOptions{stdout: stdout, stderr: stderr, listen: "127.0.0.1:6432"})
		},
	}
}

type demoOptions struct {
	stdout, stderr io.Writer
	listen         string
}

func runDemo(ctx interface{ Done() <-chan struct{} }, o demoOptions) error { return nil }
