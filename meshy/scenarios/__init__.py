"""The walkthrough's four sections as measured scenarios with statistical verdicts."""
