import { initStaffPage } from "./api.js";
initStaffPage();
