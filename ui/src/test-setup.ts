import "@testing-library/jest-dom/vitest";
import { cleanup } from "@testing-library/react";
import { afterEach } from "vitest";

// Unmount what each test rendered (vitest runs without globals here).
afterEach(() => cleanup());
