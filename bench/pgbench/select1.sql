-- The round-trip floor: one prepared statement that touches nothing.
SELECT 1;
