//! The broadcast driver's hard cases on whole simulated nodes (issue 15, point 8): a churn-and-loss
//! soak, and more messages than the log holds under anti-entropy.
