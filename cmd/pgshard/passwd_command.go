package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/wire/auth"
)

type passwdOptions struct {
	user       string
	md5        bool
	iterations int
	stdin      io.Reader
	stdout     io.Writer
}

func newPasswdCommand(stdin io.Reader, stdout io.Writer) *cobra.Command {
	o := &passwdOptions{stdin: stdin, stdout: stdout}
	cmd := &cobra.Command{
		Use:   "passwd USER",
		Short: "Print a password verifier for the config (reads the password from stdin)",
		Long: `Reads a password from standard input (first line) and prints the verifier to put in
the users section of the proxy config. The password itself is never stored.`,
		Args: cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			o.user = args[0]
			return o.Run()
		},
	}
	cmd.Flags().BoolVar(&o.md5, "md5", false, "print an md5 verifier instead of SCRAM-SHA-256")
	cmd.Flags().IntVar(&o.iterations, "iterations", auth.DefaultIterations, "SCRAM iteration count")
	return cmd
}

func (o *passwdOptions) Run() error {
	line, err := bufio.NewReader(o.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read password: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return usageError{errors.New("empty password on standard input")}
	}
	if o.md5 {
		fmt.Fprintln(o.stdout, auth.MD5Verifier(o.user, pw))
		return nil
	}
	v, err := auth.NewSCRAMVerifier(pw, nil, o.iterations)
	if err != nil {
		return fmt.Errorf("make verifier: %w", err)
	}
	fmt.Fprintln(o.stdout, v.String())
	return nil
}
